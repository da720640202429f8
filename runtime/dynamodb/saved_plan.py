"""Saved plans: a sweep's plan written as JSON by a dry run, carried out later as written or not at all.

A file names its format and version, the target (region, endpoint, table, bucket), the job's settings,
the clock it was planned with, each decision (the item's image as read, its object key, upload id and
what was decided) and the orphans. Loading refuses the whole file, naming the field, when it is
malformed, of another version, made for another target or other settings, or lists what the job could
not have decided (an object its item does not name, the deletion of an item neither expired nor stuck,
an orphan outside the prefix). Carrying it out deletes each item only while it is as read, and each
orphan only if the ownership rule still lets it go."""

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any, NoReturn

from expiry.runtime.aws_clients import ClientFactory
from expiry.runtime.dynamodb.items import text_value
from expiry.runtime.dynamodb.sweep import Decision, Plan, Sweeper, load_hook
from expiry.runtime.dynamodb.ttl import is_expired
from expiry.runtime.jobs import metrics as m
from expiry.runtime.jobs.config import Job, JobConfigError, loads_object
from expiry.runtime.jobs.run_control import Deadline, Tally
from expiry.runtime.s3 import objects

FORMAT = "expiry-sweep-plan"
VERSION = 1
KEYS = ("format", "version", "planned_at", "target", "job", "refused", "decisions", "orphans", "orphan_uploads")
RUN_ONLY = ("dry_run", "workers")  # how a run goes, not what it deletes: these may differ when applying
FLAGS = ("delete", "mark_partial", "delete_object", "mark_object")
TEXTS = ("abort_upload", "object_key")
DECISION_KEYS = ("image", *FLAGS, *TEXTS)


class PlanFileError(ValueError):
    """A plan file this command cannot carry out; the message names the file and the field."""


class _Keeping(Sweeper):
    """A Sweeper that keeps the plan it makes."""

    made: Plan | None = None

    def plan(self) -> Plan:
        self.made = super().plan()
        return self.made


class PlanRun:
    """A sweep's work for ``run_job``: carries out ``given`` (plans when None), and keeps the plan
    and the clock of the run."""

    def __init__(self, clients: ClientFactory, given: Plan | None = None) -> None:
        self.clients, self.plan, self.now = clients, given, 0.0

    def __call__(self, job: Job, now: float, should_stop: Callable[[], bool], tally: Tally) -> dict[str, Any]:
        planning_over = should_stop.planning_over if isinstance(should_stop, Deadline) else should_stop
        s3 = self.clients("s3") if job.s3 else None
        sweeper = _Keeping(job, self.clients("dynamodb"), s3, now, should_stop, tally, load_hook(job), planning_over)
        report = sweeper.run(self.plan)
        self.plan, self.now = self.plan or sweeper.made, now
        return {"plan": report["plan"], m.UNINDEXED_EXPIRED: report["unindexed_expired"]}


def settings(job: Job) -> dict[str, Any]:
    """The job's settings as JSON values, without those a run may change (RUN_ONLY)."""

    def pattern(value: Any) -> str:
        if isinstance(value, re.Pattern):
            return value.pattern
        raise TypeError(f"not a job setting: {value!r}")

    values = json.loads(json.dumps(dataclasses.asdict(job), default=pattern))
    return {name: value for name, value in values.items() if name not in RUN_ONLY}


def _encoded(value: Any) -> Any:
    """An item or attribute value as JSON: binary values in base64, as the AWS CLI prints them."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {name: _encoded(inner) for name, inner in value.items()}
    if isinstance(value, list):
        return [_encoded(inner) for inner in value]
    return value


def dumps(plan: Plan, job: Job, target: dict[str, Any], now: float) -> str:
    """The plan file's text."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "planned_at": now,
        "target": target,
        "job": settings(job),
        "refused": plan.refused,
        "decisions": [_encoded(dataclasses.asdict(decision)) for decision in plan.decisions],
        "orphans": plan.orphans,
        "orphan_uploads": [list(upload) for upload in plan.orphan_uploads],
    }
    return json.dumps(document, indent=2) + "\n"


class _Reader:
    """Reads one plan file for one command's job and target; every failure names the field."""

    def __init__(self, source: str, job: Job, now: float) -> None:
        self.source, self.job, self.now = source, job, now

    def fail(self, field: str, message: str) -> NoReturn:
        raise PlanFileError(f"{self.source}: {field}: {message}; nothing was deleted")

    def closed(self, raw: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
        """``raw`` as an object of exactly ``keys``."""
        if not isinstance(raw, dict):
            self.fail(where, f"must be a JSON object, got {raw!r}")
        prefix = f"{where}." if where else ""
        for name in raw:
            if name not in keys:
                self.fail(f"{prefix}{name}", f"unknown (a plan holds {', '.join(keys)})")
        for name in keys:
            if name not in raw:
                self.fail(f"{prefix}{name}", "missing")
        return raw

    def texts(self, raw: Any, where: str) -> list[str]:
        if not isinstance(raw, list) or not all(isinstance(value, str) for value in raw):
            self.fail(where, f"must be a list of strings, got {raw!r}")
        return raw

    def same(self, planned: Any, given: Any, where: str, what: str) -> None:
        """The plan's value is the command's, compared field by field (the first difference named)."""
        if isinstance(planned, dict) and isinstance(given, dict):
            for name in dict.fromkeys([*planned, *given]):
                self.same(planned.get(name), given.get(name), f"{where}.{name}", what)
        elif planned != given:
            self.fail(where, f"the plan {what} {planned!r}, this command's is {given!r}")

    def value(self, raw: Any, where: str) -> Any:
        """A DynamoDB attribute value (binary in base64)."""
        if not isinstance(raw, dict) or len(raw) != 1:
            self.fail(where, f'must be a DynamoDB attribute value such as {{"S": "text"}}, got {raw!r}')
        ((kind, inner),) = raw.items()
        strings = isinstance(inner, list) and all(isinstance(v, str) for v in inner)
        if (
            (kind in ("S", "N") and isinstance(inner, str))
            or (kind in ("SS", "NS") and strings)
            or (kind == "BOOL" and isinstance(inner, bool))
            or (kind == "NULL" and inner is True)
        ):
            return raw
        if kind == "M" and isinstance(inner, dict):
            return {"M": {name: self.value(v, f"{where}.{name}") for name, v in inner.items()}}
        if kind == "L" and isinstance(inner, list):
            return {"L": [self.value(v, f"{where}[{i}]") for i, v in enumerate(inner)]}
        if (kind == "B" and isinstance(inner, str)) or (kind == "BS" and strings):
            try:
                if kind == "B":
                    return {"B": base64.b64decode(inner, validate=True)}
                return {"BS": [base64.b64decode(v, validate=True) for v in inner]}
            except binascii.Error:
                self.fail(where, "is not base64")
        self.fail(where, f"is not a DynamoDB attribute value: {raw!r}")

    def decision(self, raw: Any, where: str) -> Decision:
        """A decision the job could have made about the item as its image shows it."""
        fields = self.closed(raw, where, DECISION_KEYS)
        image = fields["image"]
        if not isinstance(image, dict):
            self.fail(f"{where}.image", "must be the item as read (an object of attribute values)")
        image = {name: self.value(value, f"{where}.image.{name}") for name, value in image.items()}
        for name in self.job.key_attributes:
            if name not in image:
                self.fail(f"{where}.image", f"has no key attribute {name!r}")
        for name in FLAGS:
            if not isinstance(fields[name], bool):
                self.fail(f"{where}.{name}", f"must be true or false, got {fields[name]!r}")
        for name in TEXTS:
            if fields[name] is not None and not isinstance(fields[name], str):
                self.fail(f"{where}.{name}", f"must be a string or null, got {fields[name]!r}")
        decision = Decision(image, **{name: fields[name] for name in (*FLAGS, *TEXTS)})
        self.fits(decision, where)
        return decision

    def fits(self, d: Decision, where: str) -> None:
        """Refuse what the job's rules could not have decided about the item as read."""
        s3, stuck = self.job.s3, self.job.stuck_uploads
        named = {
            "object_key": text_value(d.image, s3.key_attribute) if s3 else None,
            "abort_upload": text_value(d.image, s3.upload_id_attribute) if s3 else None,
        }
        for name, allowed in named.items():
            if getattr(d, name) not in (None, allowed):
                self.fail(f"{where}.{name}", f"{getattr(d, name)!r} is not what its item names ({allowed!r})")
        if (d.delete_object or d.mark_object) and not d.object_key:
            self.fail(f"{where}.object_key", "is needed to delete or mark the object")
        status = text_value(d.image, s3.status_attribute) if s3 else None
        if d.mark_partial and not (stuck and status == stuck.status):
            self.fail(f"{where}.mark_partial", "the item is not in the stuck_uploads status")
        if d.mark_object and not (s3 and s3.keep_marker == "tag"):
            self.fail(f"{where}.mark_object", "the job marks no object (s3.keep_marker)")
        expired = self.job.delete_expired and is_expired(d.image, self.job.ttl_attribute, self.now)
        age = objects.age_seconds(d.image.get(stuck.since_attribute), self.now) if stuck else None
        is_stuck = bool(stuck and status == stuck.status and age is not None and age >= stuck.older_than_seconds)
        if d.delete and not (expired or (is_stuck and d.abort_upload)):
            self.fail(f"{where}.delete", "the item as read is neither expired nor a stuck upload")

    def orphan(self, key: str, where: str) -> str:
        orphans = self.job.orphaned_objects
        if orphans is None:
            self.fail(where, "listed, but the job has no orphaned_objects section")
        if not key.startswith(orphans.prefix):
            self.fail(where, f"{key!r} is not under orphaned_objects.prefix {orphans.prefix!r}")
        return key

    def upload(self, raw: Any, where: str) -> tuple[str, str]:
        if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, str) for v in raw)):
            self.fail(where, f"must be [object key, upload id], got {raw!r}")
        if not (self.job.s3 and self.job.s3.upload_id_attribute):
            self.fail(where, "listed, but the job has no s3.upload_id_attribute")
        return self.orphan(raw[0], where), raw[1]


def load(path: str, job: Job, target: dict[str, Any], now: float) -> tuple[Plan, float]:
    """The plan in the file at ``path`` and its clock, checked against the command's ``job`` and
    ``target`` at ``now``; PlanFileError (naming the file and the field) when it cannot be carried
    out as written."""
    source = f"--plan {path}"
    try:
        with open(path, encoding="utf-8") as file:
            document = loads_object(file.read(), source)
    except (OSError, UnicodeDecodeError) as error:
        raise PlanFileError(f"{source}: cannot be read: {error}; nothing was deleted") from error
    except JobConfigError as error:
        raise PlanFileError(f"{error}; nothing was deleted") from error
    r = _Reader(source, job, now)
    if not isinstance(document, dict):
        raise PlanFileError(f"{source}: must be a JSON object (a plan written by --plan-out); nothing was deleted")
    if document.get("format") != FORMAT:
        r.fail("format", f"must be {FORMAT!r}, got {document.get('format')!r}")
    if document.get("version") != VERSION:
        r.fail("version", f"{document.get('version')!r} is not a plan version this expiry reads ({VERSION})")
    raw = r.closed(document, "", KEYS)
    r.same(raw["target"], target, "target", "is for")
    r.same(raw["job"], settings(job), "job", "was made with")
    planned_at = raw["planned_at"]
    if isinstance(planned_at, bool) or not isinstance(planned_at, int | float):
        r.fail("planned_at", f"must be epoch seconds, got {planned_at!r}")
    for name in ("decisions", "orphan_uploads"):
        if not isinstance(raw[name], list):
            r.fail(name, f"must be a list, got {raw[name]!r}")
    plan = Plan(
        decisions=[r.decision(d, f"decisions[{i}]") for i, d in enumerate(raw["decisions"])],
        orphans=[r.orphan(key, f"orphans[{i}]") for i, key in enumerate(r.texts(raw["orphans"], "orphans"))],
        orphan_uploads=[r.upload(u, f"orphan_uploads[{i}]") for i, u in enumerate(raw["orphan_uploads"])],
        refused=r.texts(raw["refused"], "refused"),
    )
    return plan, float(planned_at)
