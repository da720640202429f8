"""One mass-deletion budget per table: a ledger (a small DynamoDB table, one record per swept table)
in which every run reserves what it is about to delete, before it deletes anything.

A window opens with the first reservation after the previous window ended and lasts the opening
job's ``breaker.window_seconds``. It keeps, per budget (items, orphaned objects, index entries), the
base the breaker judges against (the most things any run of the window examined: for items, the
table's ItemCount, kept from the first run so that later shards are not judged against a table their
predecessors shrank) and what its runs reserved. A run whose plan would take a window past the
breaker's allowance deletes nothing and says why, so shards, fan-out, retries and overlapping runs
share one budget. A reservation is one UpdateItem conditioned on the record's version as read (a run
that loses a race reads again). Reservations are never given back: a run that stops early, finds
items renewed or crashes after reserving leaves the rest of its window stricter, never looser.
TTL (``expires_at``) removes the records of tables no longer swept."""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from expiry.runtime.jobs.breaker import allowance, scope, window_refusal
from expiry.runtime.jobs.config import Job

LEDGER_KEY = "table"  # hash key (S): the name of the swept table
LEDGER_TTL = "expires_at"  # TTL attribute (N): a record outlives its window by KEPT_SECONDS
KEPT_SECONDS = 86400
ROUNDS = 50  # reads and conditional writes before a run that keeps losing races gives up (refused)
ITEMS, ORPHANED_OBJECTS, INDEX_ENTRIES = "items", "orphaned_objects", "index_entries"
BUDGETS = (ITEMS, ORPHANED_OBJECTS, INDEX_ENTRIES)

Item = dict[str, Any]


@dataclass(frozen=True)
class Claim:
    """What a run plans to delete of one budget, and how many things it examined to plan it."""

    budget: str
    count: int
    examined: int


@dataclass(frozen=True)
class Window:
    """A ledger record as read: its window (a new one when the last has ended) and its version."""

    opened: int
    ends: int
    version: int | None
    reserved: dict[str, int]
    base: dict[str, int]
    new: bool


def _number(record: Item, name: str) -> int:
    value = record.get(name)
    return int(float(value["N"])) if isinstance(value, dict) and "N" in value else 0


def read_window(record: Item | None, now: int, seconds: int) -> Window:
    """The window ``record`` holds, or a new one opening at ``now`` when it has ended (or none exists)."""
    version = _number(record, "version") if record and "version" in record else None
    if record and _number(record, "window_ends") > now:
        return Window(
            opened=_number(record, "window_opened"),
            ends=_number(record, "window_ends"),
            version=version,
            reserved={b: _number(record, f"{b}_reserved") for b in BUDGETS},
            base={b: _number(record, f"{b}_base") for b in BUDGETS},
            new=False,
        )
    zero = dict.fromkeys(BUDGETS, 0)
    return Window(now, now + seconds, version, zero, dict(zero), new=True)


def _write(dynamodb: Any, ledger: str, table: str, window: Window, claims: list[Claim], bases: dict[str, int]) -> bool:
    """Record ``claims`` if the record is still the version read; False when another run changed it."""
    reserved = {c.budget: window.reserved[c.budget] + c.count for c in claims}
    budgets = BUDGETS if window.new else tuple(reserved)
    values: Item = {":next": {"N": str((window.version or 0) + 1)}}
    sets = ["#version = :next"]
    for i, budget in enumerate(budgets):
        sets += [f"#r{i} = :r{i}", f"#b{i} = :b{i}"]
        values |= {
            f":r{i}": {"N": str(reserved.get(budget, 0))},
            f":b{i}": {"N": str(bases.get(budget, 0))},
        }
    names = {"#version": "version"} | {f"#r{i}": f"{b}_reserved" for i, b in enumerate(budgets)}
    names |= {f"#b{i}": f"{b}_base" for i, b in enumerate(budgets)}
    if window.new:
        sets += ["#opened = :opened", "#ends = :ends", "#ttl = :ttl"]
        names |= {"#opened": "window_opened", "#ends": "window_ends", "#ttl": LEDGER_TTL}
        values |= {
            ":opened": {"N": str(window.opened)},
            ":ends": {"N": str(window.ends)},
            ":ttl": {"N": str(window.ends + KEPT_SECONDS)},
        }
    if window.version is None:
        condition = "attribute_not_exists(#version)"
    else:
        condition = "#version = :read"
        values[":read"] = {"N": str(window.version)}
    try:
        dynamodb.update_item(
            TableName=ledger,
            Key={LEDGER_KEY: {"S": table}},
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def reserve(
    dynamodb: Any, job: Job, claims: list[Claim], now: float, sleep: Callable[[float], None] = time.sleep
) -> tuple[list[str], dict[str, Any] | None]:
    """Reserve ``claims`` in the window of ``job.table`` in the job's ledger: the breaker's refusals
    (then nothing is reserved), and the window as judged. A dry run judges and writes nothing; a job
    without a ledger, or with the breaker off, asks nothing."""
    breaker, moment = job.breaker, int(now)
    claims = [c for c in claims if c.count]
    if scope(breaker) != "per-table" or not claims:
        return [], None
    assert breaker.budget_table is not None
    for attempt in range(ROUNDS):
        record = dynamodb.get_item(
            TableName=breaker.budget_table, Key={LEDGER_KEY: {"S": job.table}}, ConsistentRead=True
        ).get("Item")
        window = read_window(record, moment, breaker.window_seconds)
        bases = {c.budget: max(window.base[c.budget], c.examined, c.count) for c in claims}
        refused = [
            reason
            for c in claims
            if (
                reason := window_refusal(
                    breaker, c.budget.replace("_", " "), c.count, window.reserved[c.budget], bases[c.budget]
                )
            )
        ]
        report = {
            "ledger": breaker.budget_table,
            "window_opened": window.opened,
            "window_ends": window.ends,
            **{
                c.budget: {
                    "reserved_before": window.reserved[c.budget],
                    "planned": c.count,
                    "base": bases[c.budget],
                    "allowed": allowance(breaker, bases[c.budget])[0],
                }
                for c in claims
            },
        }
        if refused or job.dry_run:
            return refused, report
        if _write(dynamodb, breaker.budget_table, job.table, window, claims, bases):
            return [], report
        sleep(random.uniform(0, 0.01) * (attempt + 1))  # another run reserved first: read again
    return [
        f"{job.table}: {ROUNDS} attempts to reserve in the ledger {breaker.budget_table} lost to concurrent "
        "runs; nothing was deleted"
    ], None
