"""Invocation payloads against the upload sweeper with an expiry index (issue 18): a payload is
either refused, with an error naming the offending key and nothing deleted, or it is exactly a valid
``{"dryRun": bool}`` / ``{"shards": [...]}`` payload and the run does just what it says. And the
mass-deletion breaker is one budget for the table, however the run is split into shard payloads."""

import json
from typing import Any

import pytest
from aws import MotoServer
from hostile_worlds import (
    ID,
    NOW,
    SHARD,
    STACK,
    TABLE,
    TTL,
    Session,
    World,
    build,
    differences,
    explain,
    sweep,
    sweeper_job,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

from expiry.runtime.dynamodb.ttl import expiry_shard
from expiry.runtime.jobs import metrics as m

WORLD = World(
    (
        *(Session(f"expired-{n}", "past-2d", None) for n in range(6)),
        Session("live", "future-30d", "created"),
        Session("uploaded", "future-30d", "uploaded"),
    ),
    expiry_index=True,
)
SHARDS = WORLD.shards
KNOWN = ("dryRun", "shards")


def shards_valid(value: Any) -> bool:
    """A non-empty list of this job's shard numbers (3.0 is 3: integers from other languages)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            not isinstance(n, bool) and isinstance(n, int | float) and float(n).is_integer() and 0 <= n < SHARDS
            for n in value
        )
    )


def offending(payload: dict[str, Any]) -> list[str]:
    """The keys that make a mapping payload invalid."""
    bad = [key for key in payload if key not in KNOWN]
    if "dryRun" in payload and not isinstance(payload["dryRun"], bool):
        bad.append("dryRun")
    if "shards" in payload and not shards_valid(payload["shards"]):
        bad.append("shards")
    return bad


def valid(payload: Any) -> bool:
    return payload is None or (isinstance(payload, dict) and not offending(payload))


def expected_deletions(payload: dict[str, Any] | None) -> set[str]:
    if payload and payload.get("dryRun"):
        return set()
    shards = {int(n) for n in (payload or {}).get("shards", range(SHARDS))}
    return {s.id for s in WORLD.sessions if s.ttl.startswith("past") and int(expiry_shard(s.id, SHARDS)) in shards}


def check_payload(server: MotoServer, payload: Any) -> list[str]:
    built = build(server, WORLD)
    before = built.snapshot()
    try:
        sweep(built, sweeper_job(WORLD), event=payload)
    except Exception as error:  # noqa: BLE001 - a refusal is the expected answer to most payloads
        message = str(error)
        problems = [f"the refused run changed the world: {d}" for d in differences(before, built.snapshot())]
        if valid(payload):
            problems.append(f"a valid payload was refused: {error!r}")
        elif "invocation payload" not in message:
            problems.append(f"the refusal does not say the payload is wrong: {error!r}")
        elif isinstance(payload, dict) and not any(key in message for key in offending(payload)):
            problems.append(f"the refusal names none of the offending keys {offending(payload)}: {message!r}")
        return problems
    after = built.snapshot()
    deleted = before.items.keys() - after.items.keys()
    if not valid(payload):
        return [f"the payload ran instead of being refused, and deleted {sorted(deleted)}"]
    if deleted != expected_deletions(payload):
        return [f"the payload deleted {sorted(deleted)}, it asks for {sorted(expected_deletions(payload))}"]
    if payload and payload.get("dryRun") and (changed := differences(before, after)):
        return [f"the dry run changed the world: {d}" for d in changed]
    return []


LOOK_ALIKE_KEYS = ("dry_run", "DryRun", "dryrun", "dry-run", "DRYRUN", "dryRun ", "Shards", "shard", "SHARDS")
KEYS = st.sampled_from((*KNOWN, *LOOK_ALIKE_KEYS, "detail", "Records", "payload", "body"))
SHARD_LISTS = st.sampled_from(([0], [3], [1, 2], [], [True], ["1"], [3.0], [2.5], [SHARDS], [-1], [0, 0]))
VALUES = st.one_of(
    st.booleans(),
    st.sampled_from(("true", "false", "1", "", 0, 1, 3, None)),
    SHARD_LISTS,
    st.fixed_dictionaries({"dryRun": st.booleans()}),
)
VALID = st.fixed_dictionaries(
    {}, optional={"dryRun": st.booleans(), "shards": st.lists(st.integers(0, SHARDS - 1), min_size=1, max_size=3)}
)
PAYLOADS: st.SearchStrategy[Any] = st.one_of(
    st.dictionaries(KEYS, VALUES, max_size=3),
    VALID,
    VALID.map(json.dumps),  # a JSON string of a payload
    st.lists(VALID, min_size=1, max_size=2),
    st.sampled_from((None, True, False, 0, 1, "dryRun", "", [])),
)
# The look-alikes of issue 18 (finding 3), each of which once ran for real.
LOOK_ALIKES: list[Any] = [
    {"dry_run": True},
    {"DryRun": True},
    {"dryrun": True},
    {"dry-run": True},
    json.dumps({"dryRun": True}),
    [{"dryRun": True}],
    {"detail": {"dryRun": True}},
    {"Shards": [3]},
    {"shard": 3},
    {"shards": 3},
    {"dryRun": "true"},
    {"dryRun": 1},
    True,
    "dryRun",
]


@settings(max_examples=40)
@given(payload=PAYLOADS)
@example(payload={"dry_run": True})
@example(payload=[{"dryRun": True}])
@example(payload=json.dumps({"dryRun": True}))
def test_a_payload_is_refused_by_name_or_runs_exactly_as_it_says(moto_server: MotoServer, payload: Any) -> None:
    problems = check_payload(moto_server, payload)
    assert not problems, explain(problems, payload)


@pytest.mark.parametrize("payload", LOOK_ALIKES, ids=[json.dumps(p) for p in LOOK_ALIKES])
def test_finding_3_a_look_alike_payload_is_refused_and_deletes_nothing(moto_server: MotoServer, payload: Any) -> None:
    problems = check_payload(moto_server, payload)
    assert not problems, explain(problems, payload)


def test_finding_4_ten_shard_payloads_do_not_delete_past_the_breaker(moto_server: MotoServer) -> None:
    """200 expired sessions in 10 shards: one run for the whole table is refused by the breaker; ten
    runs of ``{"shards": [k]}`` are the same deletion split in ten, and together must not delete more
    than the breaker lets one run delete (max_share of the table)."""
    world = World((), expiry_index=True, shards=10)
    built = build(moto_server, world)
    ids = [f"session-{n}" for n in range(200)]
    for start in range(0, len(ids), 25):
        built.dynamodb.batch_write_item(
            RequestItems={
                TABLE: [
                    {
                        "PutRequest": {
                            "Item": {
                                ID: {"S": i},
                                TTL: {"N": str(NOW - 86400)},
                                SHARD: {"S": expiry_shard(i, 10)},
                            }
                        }
                    }
                    for i in ids[start : start + 25]
                ]
            }
        )
    job = sweeper_job(world)
    whole = sweep(built, job)
    assert whole.emf[m.MASS_DELETION_REFUSED] == 1 and len(built.snapshot().items) == 200, "premise: one run refused"
    runs = [sweep(built, job, event={"shards": [k]}) for k in range(10)]
    deleted = 200 - len(built.snapshot().items)
    budget = int(STACK["breakerMaxSharePercent"] / 100 * 200)
    refused = sum(r.emf[m.MASS_DELETION_REFUSED] for r in runs)
    assert deleted <= budget, (
        f"ten shard payloads deleted {deleted} of 200 expired sessions, past the breaker's {budget} "
        f"(MassDeletionRefused in {refused} of the ten runs)"
    )
    assert refused >= 1, "the runs past the budget must say they were refused"
