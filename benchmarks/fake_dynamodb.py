"""A low-CPU fake DynamoDB endpoint for benchmarks: an asyncio HTTP server answering DynamoDB JSON
(Scan, Query, GetItem, DeleteItem, DescribeTable) from an in-memory table, sleeping a fixed RTT per
call without burning CPU, and counting the read and write units DynamoDB would bill. A second
table, the breaker's ledger (``ledger``), answers GetItem and UpdateItem (SET and ADD), so that
fan-out children can reserve their budget and share a rate limit.

Only what the sweeper and the naive loop send is understood: condition, filter and key
expressions made of `a = :v`, `a < :v` (and <=, >, >=, <>) and `attribute_not_exists(a)` joined by
AND (and, in conditions, OR of such ANDs); anything else answers ValidationException. Pages stop at
1 MB of items read, as DynamoDB's do. Writes may be throttled as an on-demand table throttles them
(per wall-clock second: the table's write request units, each base-table partition's and each
expiry-index partition key's 1,000 WCU): see ``Throttle``. Two extra targets drive a run:
`Bench.Reset` (a new table) and `Bench.Stats` (the counts so far).

    python benchmarks/fake_dynamodb.py --port 8765
"""

import argparse
import asyncio
import functools
import hashlib
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from expiry.runtime.dynamodb.ttl import expiry_shard

Item = dict[str, Any]
PAGE_BYTES = 1024 * 1024
READ_UNIT_BYTES, WRITE_UNIT_BYTES = 4096, 1024
TERM = re.compile(
    r"^\s*(?:attribute_not_exists\((?P<missing>[#\w]+)\)|(?P<left>[#\w]+)\s*(?P<op><>|<=|>=|=|<|>)\s*(?P<right>:\w+))\s*$"
)
ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"
OPERATIONS = ("Scan", "Query", "GetItem", "DeleteItem", "UpdateItem", "DescribeTable", "BenchReset", "BenchStats")
LEDGER = "ledger"  # the breaker's ledger table (budget windows and rate-limit seconds)
UPDATE_CLAUSE = re.compile(r"\b(SET|ADD)\s+(.*?)(?=\s+\b(?:SET|ADD)\b|$)", re.IGNORECASE | re.DOTALL)


class DynamoError(Exception):
    def __init__(self, code: str, message: str, item: Item | None = None) -> None:
        super().__init__(message)
        self.code, self.item = code, item


def value_size(value: Item) -> int:
    """Bytes DynamoDB counts for one attribute value (strings, numbers, booleans, null)."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        digits = raw.lstrip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    raise DynamoError("ValidationException", f"fake endpoint: attribute type {kind} not supported")


def item_size(item: Item) -> int:
    """Bytes DynamoDB counts for ``item``: each attribute's name plus its value."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def _compare(left: Item | None, op: str, right: Item) -> bool:
    if left is None or left.keys() != right.keys():
        return op == "<>"
    ((kind, a),), ((_, b),) = left.items(), right.items()
    x, y = (float(a), float(b)) if kind == "N" else (a, b)
    return {"=": x == y, "<>": x != y, "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


@functools.cache
def terms(expression: str) -> list[tuple[str, str, str, str]]:
    """The (missing, left, op, right) terms of an AND of comparisons and attribute_not_exists."""
    parsed = []
    for term in re.split(r"\s+AND\s+", expression, flags=re.IGNORECASE):
        found = TERM.match(term)
        if not found:
            raise DynamoError("ValidationException", f"fake endpoint: expression term not supported: {term!r}")
        parsed.append((found["missing"] or "", found["left"] or "", found["op"] or "", found["right"] or ""))
    return parsed


def _all(item: Item, expression: str, names: dict[str, str], values: dict[str, Item]) -> bool:
    for missing, left, op, right in terms(expression):
        if missing:
            if names.get(missing, missing) in item:
                return False
        elif not _compare(item.get(names.get(left, left)), op, values[right]):
            return False
    return True


def matches(item: Item, expression: str | None, names: dict[str, str], values: dict[str, Item]) -> bool:
    """Whether ``item`` satisfies an OR of ANDs of simple comparisons and attribute_not_exists terms."""
    if not expression:
        return True
    return any(_all(item, part, names, values) for part in re.split(r"\s+OR\s+", expression, flags=re.IGNORECASE))


def project(item: Item, projection: str | None, names: dict[str, str]) -> Item:
    if not projection:
        return item
    wanted = {names.get(p.strip(), p.strip()) for p in projection.split(",")}
    return {k: v for k, v in item.items() if k in wanted}


def read_units(size: int, consistent: bool) -> float:
    return math.ceil(size / READ_UNIT_BYTES) * (1.0 if consistent else 0.5)


@dataclass
class Table:
    """One table, one sparse index (``shard``, ``ttl``) with KEYS_ONLY projection, keyed by ``id``."""

    name: str = "bench"
    index_name: str = "expiry-index"
    shard_attribute: str = "expiry_shard"
    ttl_attribute: str = "ttl"
    items: dict[str, Item] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    index: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    size_bytes: int = 0  # kept as items go, so DescribeTable is metadata (as DynamoDB's is), not a walk

    def load(self, items: list[Item]) -> None:
        self.items = {i["id"]["S"]: i for i in items}
        self.size_bytes = sum(item_size(i) for i in items)
        self.order = list(self.items)
        self.position = {key: n for n, key in enumerate(self.order)}
        self.index = {}
        for key, item in self.items.items():
            if self.shard_attribute in item:
                entry = (float(item[self.ttl_attribute]["N"]), key)
                self.index.setdefault(item[self.shard_attribute]["S"], []).append(entry)
        for entries in self.index.values():
            entries.sort()

    def index_entry(self, item: Item) -> Item | None:
        if self.shard_attribute not in item:
            return None
        return {a: item[a] for a in ("id", self.shard_attribute, self.ttl_attribute)}


def make_items(count: int, expired: int, now: int, size: int, shards: int) -> list[Item]:
    """``count`` items, ``expired`` of them (spread evenly: see ``expired_ids``) expired an hour ago, each
    ``size`` bytes as DynamoDB counts them (padded with a `data` string), all carrying the index's shard
    as Expiry's writers set it (`expiry_shard`: a hash of the key, which spreads the expired ones)."""
    old = set(expired_ids(count, expired))
    items = []
    for n in range(count):
        ttl = now - 3600 if f"item-{n:08}" in old else now + 86400
        item = {
            "id": {"S": f"item-{n:08}"},
            "ttl": {"N": str(ttl)},
            "expiry_shard": {"S": expiry_shard(f"item-{n:08}", shards)},
            "status": {"S": "done"},
        }
        padding = size - item_size(item) - len("data")
        if padding > 0:
            item["data"] = {"S": "x" * padding}
        items.append(item)
    return items


def expired_ids(count: int, expired: int) -> list[str]:
    """The ids of the expired items of a table made by ``make_items``: every (count // expired)-th."""
    step = count // expired if expired else 1
    return [f"item-{n:08}" for n in range(0, step * expired, step)]


@dataclass
class Throttle:
    """Write limits per wall-clock second, as an on-demand table applies them (None: no limit):
    the table's write request units (``table_wru``: the per-table quota, 40,000 by default, or less
    while the table's warm throughput is lower), each of ``partitions`` base-table partitions'
    ``partition_wcu`` (items spread over them by a hash of the key) and each expiry-index partition
    key's ``index_key_wcu`` (every entry of a shard has the same partition key, so a shard's index
    writes go to one partition; an index write that is throttled throttles the base table's write,
    as a global secondary index's back-pressure does). DynamoDB's burst and adaptive capacity are
    not emulated."""

    table_wru: float | None = None
    partitions: int = 1
    partition_wcu: float | None = None
    index_key_wcu: float | None = None
    clock: Callable[[], float] = time.monotonic
    second: int = -1
    used: dict[str, float] = field(default_factory=dict)

    def admit(self, writes: dict[str, float]) -> bool:
        """Whether the writes (units by bucket: "table", "partition:<n>", "index:<shard>") fit this
        second's room; they are counted when they do."""
        second = int(self.clock())
        if second != self.second:
            self.second, self.used = second, {}
        for bucket, units in writes.items():
            kind = bucket.split(":", 1)[0]
            limit = {"table": self.table_wru, "partition": self.partition_wcu, "index": self.index_key_wcu}[kind]
            if limit is not None and self.used.get(bucket, 0.0) + units > limit:
                return False
        for bucket, units in writes.items():
            self.used[bucket] = self.used.get(bucket, 0.0) + units
        return True


@dataclass
class Endpoint:
    """The table, the ledger, the latency, the write limits and the counters of one fake DynamoDB."""

    table: Table = field(default_factory=Table)
    ledger: dict[str, Item] = field(default_factory=dict)
    throttle: Throttle = field(default_factory=Throttle)
    rtt_seconds: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    units: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # read units come in halves
    cpu_started: float = 0.0

    def answer(self, operation: str, request: Item) -> Item:
        handler = getattr(self, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower(), None)
        if operation not in OPERATIONS or handler is None:
            raise DynamoError("UnknownOperationException", f"fake endpoint: {operation} not supported")
        if not operation.startswith("Bench"):
            ledger = request.get("TableName") == LEDGER and operation in ("GetItem", "UpdateItem")
            self.calls[("Ledger" if ledger else "") + operation] += 1
            if ledger:
                return self.ledger_get_item(request) if operation == "GetItem" else self.update_item(request)
            if request.get("TableName") != self.table.name:
                raise DynamoError(
                    "ResourceNotFoundException", f"Requested resource not found: {request.get('TableName')}"
                )
        result: Item = handler(request)
        return result

    def bench_reset(self, request: Item) -> Item:
        self.table.load(
            make_items(request["items"], request["expired"], request["now"], request["size"], request["shards"])
        )
        self.rtt_seconds = request["rtt_ms"] / 1000
        self.ledger = {}
        self.throttle = Throttle(**request.get("throttle", {}))
        self.calls.clear()
        self.units.clear()
        self.cpu_started = time.process_time()
        return {"items": len(self.table.items)}

    def bench_stats(self, _: Item) -> Item:
        return {
            "calls": dict(self.calls),
            "units": dict(self.units),
            "items": len(self.table.items),
            "endpoint_cpu_seconds": time.process_time() - self.cpu_started,
        }

    def describe_table(self, _: Item) -> Item:
        t = self.table
        return {
            "Table": {
                "TableName": t.name,
                "TableStatus": "ACTIVE",
                "ItemCount": len(t.items),
                "TableSizeBytes": t.size_bytes,
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            }
        }

    def get_item(self, request: Item) -> Item:
        item = self.table.items.get(request["Key"]["id"]["S"])
        consistent = bool(request.get("ConsistentRead"))
        self.units["read"] += read_units(item_size(item) if item else 1, consistent)
        self.units["items_read"] += 1
        if item is None:
            return {}
        return {"Item": project(item, request.get("ProjectionExpression"), request.get("ExpressionAttributeNames", {}))}

    def ledger_get_item(self, request: Item) -> Item:
        """A ledger record (a consistent read of a record under 4 KB: one read unit)."""
        self.units["ledger_read"] += 1.0 if request.get("ConsistentRead") else 0.5
        record = self.ledger.get(request["Key"]["table"]["S"])
        return {"Item": record} if record is not None else {}

    def update_item(self, request: Item) -> Item:
        """SET and ADD on a ledger record under a condition; a failed condition is billed as DynamoDB
        bills it (one write unit) and answers the record when asked (ReturnValuesOnConditionCheckFailure)."""
        key = request["Key"]["table"]["S"]
        record = self.ledger.get(key, {})
        names, values = request.get("ExpressionAttributeNames", {}), request.get("ExpressionAttributeValues", {})
        kind = "ledger_rate" if "#rate#" in key else "ledger_budget"  # rate-limit seconds, budget windows
        self.units[f"{kind}_write"] += 1
        if not matches(record, request.get("ConditionExpression"), names, values):
            self.units[f"{kind}_write_failed"] += 1
            returned = record if record and request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" else None
            raise DynamoError("ConditionalCheckFailedException", "The conditional request failed", returned)
        updated = {**record, "table": {"S": key}}
        for verb, body in UPDATE_CLAUSE.findall(request["UpdateExpression"]):
            for action in body.split(","):
                if verb.upper() == "SET":
                    name, _, value = (part.strip() for part in action.partition("="))
                    updated[names.get(name, name)] = values[value]
                else:
                    name, value = action.split()
                    attribute = names.get(name, name)
                    total = float(updated.get(attribute, {"N": "0"})["N"]) + float(values[value]["N"])
                    updated[attribute] = {"N": str(int(total) if total.is_integer() else total)}
        self.ledger[key] = updated
        return {}

    def delete_item(self, request: Item) -> Item:
        t = self.table
        key = request["Key"]["id"]["S"]
        item = t.items.get(key)
        if not self.throttle.admit(self.write_buckets(key, item)):
            self.units["throttled"] += 1
            raise DynamoError(
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded.",
            )
        self.units["write"] += math.ceil(item_size(item) / WRITE_UNIT_BYTES) if item else 1
        names, values = request.get("ExpressionAttributeNames", {}), request.get("ExpressionAttributeValues", {})
        if not matches(item or {}, request.get("ConditionExpression"), names, values):
            returned = item if item and request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" else None
            raise DynamoError("ConditionalCheckFailedException", "The conditional request failed", returned)
        if item is not None:
            del t.items[key]
            t.size_bytes -= item_size(item)
            entry = t.index_entry(item)
            if entry:
                self.units["index_write"] += math.ceil(item_size(entry) / WRITE_UNIT_BYTES)
        return {}

    def write_buckets(self, key: str, item: Item | None) -> dict[str, float]:
        """The write units a DeleteItem of ``key`` takes from each throttling bucket."""
        units = math.ceil(item_size(item) / WRITE_UNIT_BYTES) if item else 1
        partition = int(hashlib.md5(key.encode()).hexdigest()[:8], 16) % max(1, self.throttle.partitions)
        buckets = {"table": float(units), f"partition:{partition}": float(units)}
        entry = self.table.index_entry(item) if item else None
        if entry:
            buckets[f"index:{entry[self.table.shard_attribute]['S']}"] = float(math.ceil(item_size(entry) / 1024))
        return buckets

    def _page(self, request: Item, candidates: Any, sizes: Any) -> Item:
        """One page of ``candidates`` (key, stored thing) after ExclusiveStartKey: up to Limit items or 1 MB."""
        names, values = request.get("ExpressionAttributeNames", {}), request.get("ExpressionAttributeValues", {})
        limit = request.get("Limit") or math.inf
        read_bytes = scanned = 0
        found: list[Item] = []
        last: str | None = None
        for key, item in candidates:
            size = sizes(item)
            if scanned >= limit or read_bytes + size > PAGE_BYTES:
                break
            read_bytes += size
            scanned += 1
            last = key
            if matches(item, request.get("FilterExpression"), names, values):
                found.append(project(item, request.get("ProjectionExpression"), names))
        else:
            last = None
        self.units["read"] += read_units(read_bytes, bool(request.get("ConsistentRead")))
        self.units["items_read"] += scanned
        page: Item = {"Count": len(found), "ScannedCount": scanned}
        if request.get("Select") != "COUNT":
            page["Items"] = found
        if last is not None:
            page["LastEvaluatedKey"] = {"id": {"S": last}}
        return page

    def scan(self, request: Item) -> Item:
        t = self.table
        # Segment s of a parallel Scan holds the positions n with n % TotalSegments == s.
        segment, total = request.get("Segment", 0), request.get("TotalSegments", 1)
        after = request.get("ExclusiveStartKey")
        start = t.position[after["id"]["S"]] + total if after else segment
        candidates = ((key, t.items[key]) for key in t.order[start::total] if key in t.items)
        return self._page(request, candidates, item_size)

    def query(self, request: Item) -> Item:
        t = self.table
        if request.get("IndexName") != t.index_name:
            raise DynamoError("ValidationException", "fake endpoint: only the expiry index can be queried")
        names, values = request.get("ExpressionAttributeNames", {}), request["ExpressionAttributeValues"]
        shard = next(v["S"] for k, v in values.items() if "S" in v)
        after = request.get("ExclusiveStartKey", {}).get("id", {}).get("S")
        entries = t.index.get(shard, [])
        if after is not None:
            entries = entries[next(n for n, (_, key) in enumerate(entries) if key == after) + 1 :]
        condition = request["KeyConditionExpression"]

        def in_range() -> Any:
            """Entries of the shard in TTL order while the key condition holds (the range is a prefix)."""
            for _, key in entries:
                entry = t.index_entry(t.items[key]) if key in t.items else None
                if entry is None:
                    continue
                if not matches(entry, condition, names, values):
                    return
                yield key, entry

        return self._page(request, in_range(), item_size)


def http_reply(status: int, body: bytes) -> bytes:
    reason = "OK" if status == 200 else "Bad Request"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.0\r\n"
        f"Content-Length: {len(body)}\r\nx-amzn-RequestId: fake\r\n\r\n"
    )
    return head.encode() + body


async def serve_connection(endpoint: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: one request at a time per connection, the RTT slept before each reply."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            target = headers.get("x-amz-target", "")
            operation = ("Bench" if target.startswith("Bench.") else "") + target.rsplit(".", 1)[-1]
            try:
                status, reply = 200, endpoint.answer(operation, json.loads(body or b"{}"))
            except DynamoError as error:
                status, reply = 400, {"__type": ERROR_PREFIX + error.code, "message": str(error)}
                if error.item is not None:
                    reply["Item"] = error.item
            if not operation.startswith("Bench"):
                await asyncio.sleep(endpoint.rtt_seconds)
            writer.write(http_reply(status, json.dumps(reply).encode()))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    endpoint = Endpoint()
    server = await asyncio.start_server(lambda r, w: serve_connection(endpoint, r, w), "127.0.0.1", port, backlog=256)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
