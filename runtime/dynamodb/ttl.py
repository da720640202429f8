"""TTL helpers for applications that write to and read from Expiry's TTL tables.

DynamoDB's TTL attribute must be a Number holding epoch *seconds*. Items whose value is in
milliseconds (a common bug) never expire, so every helper here refuses such values.
DynamoDB deletes expired items within a few days, not at once: until then reads still return
them, so reads that must not see expired items use :func:`read_filter`.
"""

import math
import time
import zlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypedDict

DEFAULT_TTL_ATTRIBUTE = "expires_at"
DEFAULT_SHARD_ATTRIBUTE = "expiry_shard"
EXPIRY_INDEX_NAME = "expiry-index"
DEFAULT_SHARDS = 10
MAX_SHARDS = 100

# 10**11 epoch seconds is the year 5138; any real TTL below it, any epoch-millisecond value
# of this century above it (1.7e12 in 2024).
MAX_EPOCH_SECONDS = 10**11


class ReadFilter(TypedDict):
    """Keyword arguments of a DynamoDB client ``query`` or ``scan``."""

    FilterExpression: str
    ExpressionAttributeNames: dict[str, str]
    ExpressionAttributeValues: dict[str, dict[str, str]]


class TtlValueError(ValueError):
    """A TTL value that DynamoDB would never act on as intended."""


def check_epoch_seconds(value: float | Decimal, what: str = "TTL value") -> int:
    """Return ``value`` as whole epoch seconds, refusing values that look like milliseconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise TtlValueError(f"{what} must be a number of epoch seconds, got {value!r}")
    if isinstance(value, float | Decimal) and not math.isfinite(value):
        raise TtlValueError(f"{what} must be a finite number of epoch seconds, got {value!r}")
    if value >= MAX_EPOCH_SECONDS or value <= -MAX_EPOCH_SECONDS:
        raise TtlValueError(
            f"{what} {value} looks like epoch milliseconds; DynamoDB TTL needs epoch seconds "
            f"(divide by 1000), otherwise the item never expires"
        )
    return int(value)


def _now(now: float | None) -> float:
    return time.time() if now is None else float(check_epoch_seconds(now, "now"))


def expires_at(seconds: float, now: float | None = None) -> int:
    """The TTL value for an item that should live ``seconds`` from ``now`` (epoch seconds)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise TtlValueError(f"seconds must be a number >= 0, got {seconds!r}")
    return check_epoch_seconds(math.ceil(_now(now) + seconds))


def ttl_value(item: Mapping[str, Any], attribute: str) -> int | None:
    """The item's TTL in epoch seconds, or None when DynamoDB would never expire it.

    Accepts items from the resource API (``Decimal``) and from the client API (``{"N": "…"}``).
    Items without the attribute, or with a non-Number value, never expire.
    """
    value = item.get(attribute)
    if isinstance(value, Mapping):
        if "N" not in value:
            return None
        value = Decimal(value["N"])
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return check_epoch_seconds(value, f"TTL attribute {attribute!r}")


def is_expired(item: Mapping[str, Any], attribute: str, now: float | None = None) -> bool:
    """True when DynamoDB considers the item expired: its TTL is earlier than ``now``."""
    value = ttl_value(item, attribute)
    return value is not None and value < _now(now)


def read_filter(attribute: str, now: float | None = None) -> ReadFilter:
    """Keyword arguments for a client ``query``/``scan`` that hide expired, undeleted items.

    Keeps items without a TTL, with a non-Number TTL (DynamoDB never expires those) and with a
    TTL at or after ``now``. Placeholders are prefixed ``#expiry_``/``:expiry_`` so the
    expression can be AND-ed with an application's own.
    """
    moment = int(_now(now))
    return {
        "FilterExpression": (
            "attribute_not_exists(#expiry_ttl) OR NOT attribute_type(#expiry_ttl, :expiry_n)"
            " OR #expiry_ttl >= :expiry_now"
        ),
        "ExpressionAttributeNames": {"#expiry_ttl": attribute},
        "ExpressionAttributeValues": {":expiry_now": {"N": str(moment)}, ":expiry_n": {"S": "N"}},
    }


def expiry_shard(key: str | int | bytes | Decimal, shards: int = DEFAULT_SHARDS) -> str:
    """The expiry-index shard ("0".."shards-1") for an item, stable for the same key."""
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be an integer in 1..{MAX_SHARDS}, got {shards!r}")
    raw = key if isinstance(key, bytes) else str(key).encode()
    return str(zlib.crc32(raw) % shards)


def expiry_attributes(
    key: str | int | bytes | Decimal,
    seconds: float,
    *,
    now: float | None = None,
    ttl_attribute: str = DEFAULT_TTL_ATTRIBUTE,
    shard_attribute: str = DEFAULT_SHARD_ATTRIBUTE,
    shards: int = DEFAULT_SHARDS,
) -> dict[str, int | str]:
    """The attributes that give an item its TTL and put it in the expiry index."""
    return {
        ttl_attribute: expires_at(seconds, now),
        shard_attribute: expiry_shard(key, shards),
    }
