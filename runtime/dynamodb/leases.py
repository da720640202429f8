"""Leases on DynamoDB items whose TTL decides who holds them, and the interruption audit trail.

A lease is one item per key: its owner (the worker holding it), its thread (the work it is for),
when it was claimed and when it expires (the table's TTL attribute, epoch seconds). A lease whose
expiry is earlier than ``now`` is free, even while DynamoDB has not deleted it yet. Every change is
one conditional write, so two claimers racing for a key never both win, and a refused call reports
the holder the condition saw (``ReturnValuesOnConditionCheckFailure``), not one read later.

Clocks differ between machines: a claimer whose clock is ``s`` seconds ahead finds a lease free
``s`` seconds early, so a holder should finish or renew well before ``expires_at``.
"""

from dataclasses import astuple, dataclass
from typing import Any

from botocore.exceptions import ClientError

from expiry.runtime.dynamodb.ttl import check_epoch_seconds, expires_at

DEFAULT_LEASE_SECONDS = 3600
# A lease longer than a week is more likely a duration in milliseconds than a lease.
MAX_LEASE_SECONDS = 7 * 86400
DEFAULT_RETENTION_SECONDS = 30 * 86400
# Likewise an audit record kept longer than ten years.
MAX_RETENTION_SECONDS = 10 * 365 * 86400

Item = dict[str, Any]


def _check_layout(layout: "LeaseLayout | AuditLayout") -> None:
    names = astuple(layout)
    for field, name in zip(type(layout).__dataclass_fields__, names, strict=True):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{type(layout).__name__}.{field} must be a non-empty string, got {name!r}")
    attributes = names[1:]
    if len(set(attributes)) != len(attributes):
        raise ValueError(f"{type(layout).__name__}: attribute names must differ, got {list(attributes)}")


@dataclass(frozen=True)
class LeaseLayout:
    """Where leases live: table and attribute names (defaults: the stack program's job claims)."""

    table: str = "active-jobs"
    key: str = "projectUserId"
    owner: str = "containerId"
    thread: str = "threadId"
    claimed_at: str = "claimedAt"
    expires_at: str = "expiresAt"

    def __post_init__(self) -> None:
        _check_layout(self)


@dataclass(frozen=True)
class AuditLayout:
    """Where interruptions are recorded (defaults: the stack program's interruptions table)."""

    table: str = "interruptions"
    key: str = "messageId"
    record: str = "recordId"
    interrupted: str = "interruptedContainer"
    new_thread: str = "newThreadId"
    timestamp: str = "timestamp"
    ttl: str = "ttl"

    def __post_init__(self) -> None:
        _check_layout(self)


JOB_CLAIMS = LeaseLayout()
INTERRUPTIONS = AuditLayout()


@dataclass(frozen=True)
class Lease:
    """A lease as stored; ``expires_at`` None: no Number expiry, so it never expires."""

    key: str
    owner: str
    thread: str
    claimed_at: int | None
    expires_at: int | None

    def is_live(self, now: int) -> bool:
        """False once the expiry is earlier than ``now`` (DynamoDB's TTL rule)."""
        return self.expires_at is None or self.expires_at >= now


@dataclass(frozen=True)
class Outcome:
    """Whether a claim, renew or release was granted, and the live lease after it (None: free)."""

    granted: bool
    holder: Lease | None


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} must be a non-empty string, got {value!r}")
    return value


def _duration(value: object, field: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{field} must be a whole number of seconds > 0, got {value!r}")
    if value > maximum:
        raise ValueError(f"{field} {value} is over {maximum} seconds: a duration in milliseconds?")
    return value


def _number(item: Item, name: str) -> int | None:
    value = item.get(name)
    if not isinstance(value, dict) or "N" not in value:
        return None
    return check_epoch_seconds(float(value["N"]), f"attribute {name!r}")


def _string(item: Item, name: str) -> str:
    value = item.get(name)
    return value["S"] if isinstance(value, dict) and "S" in value else ""


def _live(item: Item | None, layout: LeaseLayout, now: int) -> Lease | None:
    if not item:
        return None
    lease = Lease(
        key=_string(item, layout.key),
        owner=_string(item, layout.owner),
        thread=_string(item, layout.thread),
        claimed_at=_number(item, layout.claimed_at),
        expires_at=_number(item, layout.expires_at),
    )
    return lease if lease.is_live(now) else None


def _conditional(call: Any, **kwargs: Any) -> tuple[bool, Item | None]:
    """One conditional write: (True, its result's attributes) or (False, the item the condition saw)."""
    try:
        response = call(ReturnValuesOnConditionCheckFailure="ALL_OLD", **kwargs)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        return False, error.response.get("Item")
    return True, response.get("Attributes")


def check(dynamodb: Any, key: str, *, now: float, layout: LeaseLayout = JOB_CLAIMS) -> Lease | None:
    """The live lease on ``key``; None when there is none or it expired (a strongly consistent read)."""
    moment = check_epoch_seconds(now, "now")
    response = dynamodb.get_item(
        TableName=layout.table, Key={layout.key: {"S": _text(key, "key")}}, ConsistentRead=True
    )
    return _live(response.get("Item"), layout, moment)


def claim(
    dynamodb: Any,
    key: str,
    *,
    owner: str,
    thread: str,
    now: float,
    seconds: int = DEFAULT_LEASE_SECONDS,
    layout: LeaseLayout = JOB_CLAIMS,
) -> Outcome:
    """Hold ``key`` for ``seconds`` from ``now`` if it is free, expired or held for the same thread.

    A claim for the same thread hands the lease to ``owner`` (the previous owner's renew and release
    are refused from then on). Refused: ``holder`` is the live lease of another thread.
    """
    moment = check_epoch_seconds(now, "now")
    granted, item = _conditional(
        dynamodb.update_item,
        TableName=layout.table,
        Key={layout.key: {"S": _text(key, "key")}},
        UpdateExpression="SET #owner = :owner, #thread = :thread, #claimed = :now, #expires = :expires",
        ConditionExpression="attribute_not_exists(#key) OR #expires < :now OR #thread = :thread",
        ExpressionAttributeNames={
            "#key": layout.key,
            "#owner": layout.owner,
            "#thread": layout.thread,
            "#claimed": layout.claimed_at,
            "#expires": layout.expires_at,
        },
        ExpressionAttributeValues={
            ":owner": {"S": _text(owner, "owner")},
            ":thread": {"S": _text(thread, "thread")},
            ":now": {"N": str(moment)},
            ":expires": {"N": str(expires_at(_duration(seconds, "seconds", MAX_LEASE_SECONDS), moment))},
        },
        ReturnValues="ALL_NEW",
    )
    return Outcome(granted, _live(item, layout, moment))


def renew(
    dynamodb: Any,
    key: str,
    *,
    owner: str,
    now: float,
    seconds: int = DEFAULT_LEASE_SECONDS,
    layout: LeaseLayout = JOB_CLAIMS,
) -> Outcome:
    """Make ``owner``'s live lease end ``seconds`` from ``now``; an expired lease must be claimed again."""
    moment = check_epoch_seconds(now, "now")
    granted, item = _conditional(
        dynamodb.update_item,
        TableName=layout.table,
        Key={layout.key: {"S": _text(key, "key")}},
        UpdateExpression="SET #expires = :expires",
        ConditionExpression="#owner = :owner AND #expires >= :now",
        ExpressionAttributeNames={"#owner": layout.owner, "#expires": layout.expires_at},
        ExpressionAttributeValues={
            ":owner": {"S": _text(owner, "owner")},
            ":now": {"N": str(moment)},
            ":expires": {"N": str(expires_at(_duration(seconds, "seconds", MAX_LEASE_SECONDS), moment))},
        },
        ReturnValues="ALL_NEW",
    )
    return Outcome(granted, _live(item, layout, moment))


def release(dynamodb: Any, key: str, *, owner: str, now: float, layout: LeaseLayout = JOB_CLAIMS) -> Outcome:
    """Delete the lease if ``owner`` holds it (live or expired); anyone else is refused."""
    moment = check_epoch_seconds(now, "now")
    granted, item = _conditional(
        dynamodb.delete_item,
        TableName=layout.table,
        Key={layout.key: {"S": _text(key, "key")}},
        ConditionExpression="#owner = :owner",
        ExpressionAttributeNames={"#owner": layout.owner},
        ExpressionAttributeValues={":owner": {"S": _text(owner, "owner")}},
    )
    return Outcome(granted, None if granted else _live(item, layout, moment))


def record_interruption(
    dynamodb: Any,
    message_id: str,
    *,
    record_id: str,
    interrupted_container: str,
    new_thread: str,
    now: float,
    retention_seconds: int = DEFAULT_RETENTION_SECONDS,
    layout: AuditLayout = INTERRUPTIONS,
) -> Item:
    """Write the audit record of a holder interrupted for ``new_thread``; it expires after the retention.

    Returns the item written (client format). Recording the same message again replaces its record.
    """
    moment = check_epoch_seconds(now, "now")
    item = {
        layout.key: {"S": _text(message_id, "message_id")},
        layout.record: {"S": _text(record_id, "record_id")},
        layout.interrupted: {"S": _text(interrupted_container, "interrupted_container")},
        layout.new_thread: {"S": _text(new_thread, "new_thread")},
        layout.timestamp: {"N": str(moment)},
        layout.ttl: {
            "N": str(expires_at(_duration(retention_seconds, "retention_seconds", MAX_RETENTION_SECONDS), moment))
        },
    }
    dynamodb.put_item(TableName=layout.table, Item=item)
    return item
