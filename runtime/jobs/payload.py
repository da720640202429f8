"""Invocation payloads: a closed set of known keys of known types, or the run is refused.

A payload can only make a run smaller or safer. Anything it does not know (a look-alike spelling, a
nested object, a JSON string, a list) refuses the whole run before it reads or deletes anything,
naming the key and, when one is near, the key that was probably meant."""

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from expiry.runtime import kinds
from expiry.runtime.jobs.config import Job, JobConfigError, shard_subset

SOURCE = "invocation payload"
DRY_RUN, SHARDS, INDEXES, FROM, JOB, RECORDS = "dryRun", "shards", "indexes", "source", "job", "Records"
SCHEDULE_SOURCE = "expiry-schedule"


def known_keys(job: Job) -> tuple[str, ...]:
    """The keys a payload of ``job`` may carry."""
    keys = [DRY_RUN, FROM, JOB]
    if job.expiry_index:
        keys.append(SHARDS)
    if job.references:
        keys.append(INDEXES)
    if not kinds.kind(job.kind).scheduled:  # invoked by its stream's mapping, with the batch's records
        keys.append(RECORDS)
    return tuple(keys)


def _folded(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def nearest_key(name: str, known: tuple[str, ...]) -> str | None:
    """The known key ``name`` most likely meant (``dry_run`` -> ``dryRun``), or None."""
    folded = {_folded(key): key for key in known}
    if _folded(name) in folded:
        return folded[_folded(name)]
    close = difflib.get_close_matches(_folded(name), list(folded), n=1, cutoff=0.75)
    return folded[close[0]] if close else None


def _refuse(key: str | None, message: str) -> JobConfigError:
    where = f"{SOURCE}: {key}" if key else SOURCE
    return JobConfigError(f"{where}: {message}; nothing was read or deleted")


def as_invoked(job: Job, event: Any) -> Job:
    """``job`` as the payload ``event`` asks for it: ``{"dryRun": true}`` forces a dry run (nothing
    turns a configured dry run off); ``{"shards": [n, ...]}`` narrows an expiry-index job to some of
    its shards; ``{"indexes": [k, ...]}`` narrows an orphaned-references job to some of its
    ``references.indexes`` (by position); ``source`` and ``job`` are what the schedule sends (``job``
    must be this job's name); a stream-cascade job takes its ``Records``. No payload (None, or
    ``{}``) runs the job as configured."""
    if event is None:
        return job
    if not isinstance(event, Mapping):
        raise _refuse(
            None, f"must be a JSON object of {list(known_keys(job))}, got {type(event).__name__} {event!r:.80}"
        )
    known = known_keys(job)
    for key in event:
        if key not in known:
            near = nearest_key(str(key), known) if isinstance(key, str) else None
            hint = f"; did you mean {near!r}?" if near else ""
            raise _refuse(str(key), f"unknown key{hint} (allowed: {list(known)})")
    if FROM in event and (not isinstance(event[FROM], str) or not event[FROM]):
        raise _refuse(FROM, f"must be a non-empty string, got {event[FROM]!r}")
    if JOB in event and event[JOB] != job.name:
        raise _refuse(JOB, f"names job {event[JOB]!r}, but this function runs {job.name!r}")
    if RECORDS in event and not isinstance(event[RECORDS], list):
        raise _refuse(RECORDS, f"must be a list of stream records, got {type(event[RECORDS]).__name__}")
    if DRY_RUN in event:
        value = event[DRY_RUN]
        if not isinstance(value, bool):
            raise _refuse(DRY_RUN, f"must be true or false, got {value!r}")
        job = dataclasses.replace(job, dry_run=True) if value else job
    if SHARDS in event:
        index = job.expiry_index
        assert index is not None  # SHARDS is known only with an expiry index
        subset = shard_subset(event[SHARDS], index.shard_numbers())
        if subset is None:
            raise _refuse(
                SHARDS,
                f"must be a non-empty list of this job's expiry-index shards {list(index.shard_numbers())}, "
                f"got {event[SHARDS]!r}",
            )
        job = dataclasses.replace(job, expiry_index=dataclasses.replace(index, only_shards=subset))
    if INDEXES in event:
        job = _with_indexes(job, event[INDEXES])
    return job


def _with_indexes(job: Job, value: Any) -> Job:
    """``job`` reading only the ``references.indexes`` at the positions ``value`` lists (distinct)."""
    refs = job.references
    assert refs is not None  # INDEXES is known only to orphaned-references jobs
    positions = tuple(range(len(refs.indexes)))
    subset = shard_subset(value, positions)
    if subset is None or len(subset) != len(value):
        raise _refuse(
            INDEXES,
            f"must be a non-empty list of distinct positions in this job's references.indexes {list(positions)}, "
            f"got {value!r}",
        )
    return dataclasses.replace(
        job, references=dataclasses.replace(refs, indexes=tuple(refs.indexes[k] for k in subset))
    )
