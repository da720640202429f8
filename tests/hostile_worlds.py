"""Hostile worlds on the upload-sessions layout (seed 001) for the adversarial suite (issue 18).

A world is a table of upload sessions and a bucket written the way the upload application (and its
bugs) write them: ids with dots, spaces, ``+``, ``%``, unicode and ids that prefix other ids; keys
shared by several sessions or naming another session's object; missing and wrongly typed attributes
(ttl as S, ttl in milliseconds, no status, key as N); kept statuses; multipart uploads with and
without parts; objects and uploads no session names. Worlds are plain frozen dataclasses, so a
failing example can be pasted back as ``@example(...)``.

The invariant every deleting path keeps, checked here from snapshots taken in moto_server:

- nothing live is deleted or altered: an item whose TTL is in the future, absent or not an epoch-
  seconds Number keeps its image (a renewed item counts as live); the only change allowed to an
  expired item is the stuck rule's ``created`` -> ``partial``;
- an object survives while any item that exists after the run names it by its key attribute, and so
  does the object of a live item or of an item in a kept status (which is also marked once its item
  is gone); an upload survives while an existing item names it; a keep mark goes only on an object
  named by an item in a kept status;
- the dry run changes nothing and plans exactly what the real run then does (marks included);
- counts are of effects: the EMF metrics ItemsDeleted, ItemsMarkedForReview, ObjectsDeleted +
  OrphansDeleted, UploadsAborted and ObjectsMarkedKept equal what disappeared or changed in moto,
  summed over every EMF line a run printed (a crashed run's included);
- after a crash and a rerun, everything the run without the crash did is done (nothing the crashed
  run owned is left behind), and the metrics of both runs add up to the effects.

Job settings follow the stack program's defaults, read from Pulumi.yaml (key pattern, prefix, ages,
kept/stuck/partial statuses, breaker) so the suite follows the lead's changes to them; the job gets
``s3.owner_index`` and ``breaker.budget_table`` (with their index and ledger table) only once
``runtime/jobs/config.py`` knows them (ownership.md)."""

import contextlib
import dataclasses
import io
import itertools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from aws import MotoServer, make_client
from hypothesis import strategies as st
from moto.dynamodb import comparisons

from expiry.components.schedule import rate_seconds
from expiry.runtime.dynamodb.ttl import expiry_shard
from expiry.runtime.handlers.work import stream_work, sweep_work
from expiry.runtime.jobs import metrics as m
from expiry.runtime.jobs.config import Job, parse_job
from expiry.runtime.jobs.runner import Work, run_job
from expiry.runtime.s3.objects import KEEP_TAG

ROOT = Path(__file__).resolve().parent.parent
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto_server's access log: one line per call


def _typed_comparison(op: type[Any]) -> None:
    """DynamoDB answers a comparison of values of different types (a ttl of type S against a Number)
    with false; moto 5.2.5 raises TypeError and answers 500. moto_server runs in this process: its
    comparisons are made to answer as DynamoDB does, so a world with a ttl of type S can be scanned."""
    compare = op.expr

    def expr(self: Any, item: Any) -> bool:
        try:
            return bool(compare(self, item))
        except TypeError:
            return False

    op.expr = expr


for _op in (
    comparisons.OpLessThan,
    comparisons.OpGreaterThan,
    comparisons.OpLessThanOrEqual,
    comparisons.OpGreaterThanOrEqual,
):
    _typed_comparison(_op)
CONFIG_TEXT = (ROOT / "runtime" / "jobs" / "config.py").read_text()
OWNER_INDEX_SUPPORTED = "owner_index" in CONFIG_TEXT  # s3.owner_index (ownership.md)
BUDGET_SUPPORTED = "budget_table" in CONFIG_TEXT  # breaker.budget_table: the stack's deletion-budget ledger
LEDGER = "expiry-deletion-budget"
OWNER_INDEX = "key-owner-index"
EXPIRY_INDEX = "expiry-index"


def _stack_defaults() -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    return {name: spec["default"] for name, spec in config.items() if isinstance(spec, dict) and "default" in spec}


STACK = _stack_defaults()
ID = STACK["uploadsSessionIdAttribute"]
TTL = STACK["uploadsTtlAttribute"]
KEY = STACK["uploadsObjectKeyAttribute"]
UPLOAD_ID = STACK["uploadsUploadIdAttribute"]
STATUS = STACK["uploadsStatusAttribute"]
KEPT = tuple(STACK["uploadsKeptStatuses"])
STUCK = STACK["uploadsStuckStatus"]
PARTIAL = STACK["uploadsPartialStatus"]
PREFIX = STACK["uploadsObjectPrefix"]
KEY_PATTERN = STACK["uploadsKeyPattern"]
TYPE, SHARD = "uploadType", "expiry_shard"
# ScheduledSweeper marks kept objects ahead by twice the schedule's interval.
MARK_AHEAD = 2 * (rate_seconds(STACK["uploadsSweepSchedule"]) or 21600)
UNINDEXED_CHECK_ITEMS = 10_000  # what the stack program sets on sweepers reading an expiry index

NOW = int(time.time()) + 3 * 86400  # the sweep's clock: objects written now are three days old
LATER = NOW + 3 * 3600  # the rerun's clock after a crash
TABLE = "upload-sessions"
BUCKET = "uploads"
SHARDS = 4
DAY = 86400

# TTL values by name: what DynamoDB does with each is the point (S and milliseconds never expire).
TTL_VALUES: dict[str, tuple[str, int] | None] = {
    "future-30d": ("N", NOW + 30 * DAY),
    "future-6h": ("N", NOW + 6 * 3600),  # live, within the mark-ahead window
    "future-2h": ("N", NOW + 2 * 3600),  # live now, expired at LATER
    "past-30m": ("N", NOW - 1800),  # expired, not stuck yet
    "past-2d": ("N", NOW - 2 * DAY),
    "string": ("S", NOW - 2 * DAY),
    "millis": ("N", (NOW - 2 * DAY) * 1000),
    "absent": None,
}
OWN = "<own>"  # a session's own key: uploads/2025-08-21/<id>.mp4


def object_key(name: str, date: str = "2025-08-21", ext: str = ".mp4") -> str:
    return f"{PREFIX}{date}/{name}{ext}"


@dataclass(frozen=True)
class Session:
    """One upload session as the application wrote it."""

    id: str
    ttl: str = "past-2d"
    status: str | None = "created"
    key: str | None = OWN
    upload: str = "none"  # none | empty (no part) | parts | gone (an id S3 does not know)
    has_object: bool = True
    marked: bool = False  # the object already carries the keep mark
    shard: str | None = "auto"  # expiry_shard with an expiry index: auto (the writer's), None, or a value
    key_is_number: bool = False

    @property
    def object_key(self) -> str | None:
        if self.key is None or self.key_is_number:
            return None
        return object_key(self.id) if self.key == OWN else self.key


@dataclass(frozen=True)
class World:
    sessions: tuple[Session, ...]
    strays: tuple[str, ...] = ()  # objects written without a session
    stray_uploads: tuple[tuple[str, bool], ...] = ()  # (key, has a part): uploads no session names
    expiry_index: bool = False
    owner_index: bool = False
    shards: int = SHARDS


@dataclass(frozen=True)
class Batch:
    """A stream batch: TTL deletions, and records the cascade must ignore, in delivery order."""

    world: World
    events: tuple[tuple[str, str], ...]  # ("ttl" | "user" | "modify", session id)
    rewritten: tuple[tuple[str, bool], ...] = ()  # TTL-deleted sessions written anew: (id, same key)


# Generators -------------------------------------------------------------------------------------

ID_POOL = ("a", "a.b", "ab", "a b", "a+b", "take", "take.2", "take 2", "50%", "%41", "é", "日本", "a.b.c", "a/b")
IDS = st.one_of(st.sampled_from(ID_POOL), st.text("ab.+% é日/-", min_size=1, max_size=5))
DATES = ("2025-08-21", "2025-08-20")
EXTS = (".mp4", ".mov", ".tar.gz", "")
STATUSES = ("created", "uploaded", "partial", None, "uploading")
UPLOADS = ("none", "none", "empty", "parts", "gone")


@st.composite
def _key(draw: st.DrawFn, session_id: str, earlier: list[str]) -> str | None:
    how = draw(st.sampled_from(("own", "own", "own", "variant", "shared", "other", "outside", "absent")))
    if how == "own":
        return OWN
    if how == "variant":
        return object_key(session_id, draw(st.sampled_from(DATES)), draw(st.sampled_from(EXTS)))
    if how == "shared" and earlier:
        return draw(st.sampled_from(earlier))
    if how == "other":
        return object_key(draw(IDS))
    if how == "outside":
        return f"videos/{session_id}.mp4"
    return None


@st.composite
def worlds(
    draw: st.DrawFn, expiry_index: bool | None = None, owner_index: bool | None = None, max_sessions: int = 5
) -> World:
    """A hostile world; ``expiry_index``/``owner_index`` fixed or drawn."""
    with_index = draw(st.booleans()) if expiry_index is None else expiry_index
    with_owners = draw(st.booleans()) if owner_index is None else owner_index
    ttl_kinds = [k for k in TTL_VALUES if not (with_index and k == "string")]  # DynamoDB refuses it there
    sessions: list[Session] = []
    for session_id in draw(st.lists(IDS, min_size=1, max_size=max_sessions, unique=True)):
        key = draw(_key(session_id, [k for s in sessions if (k := s.object_key)]))
        number = key is None and not with_owners and draw(st.booleans())
        named = key is not None
        has_object = named and draw(st.booleans())
        sessions.append(
            Session(
                id=session_id,
                ttl=draw(st.sampled_from(ttl_kinds)),
                status=draw(st.sampled_from(STATUSES)),
                key="42" if number else key,
                upload=draw(st.sampled_from(UPLOADS)) if named else "none",
                has_object=has_object,
                marked=has_object and draw(st.booleans()) and draw(st.booleans()),
                shard=draw(st.sampled_from(("auto", "auto", "auto", None, "99"))) if with_index else "auto",
                key_is_number=number,
            )
        )
    stray_names = st.builds(object_key, IDS, st.sampled_from(DATES), st.sampled_from(EXTS))
    strays = draw(st.lists(stray_names, max_size=2, unique=True))
    stray_uploads = draw(st.lists(st.tuples(stray_names, st.booleans()), max_size=1))
    return World(tuple(sessions), tuple(strays), tuple(stray_uploads), with_index, with_owners)


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    """A world and a stream batch over it (the cascade reads no expiry index)."""
    world = draw(worlds(expiry_index=False))
    ids = [s.id for s in world.sessions]
    expired = [s.id for s in world.sessions if expires(TTL_VALUES[s.ttl], NOW)]
    ttl_ids = draw(st.lists(st.sampled_from(expired), min_size=1, unique=True)) if expired else []
    rest = [i for i in ids if i not in ttl_ids]
    user_ids = draw(st.lists(st.sampled_from(rest), max_size=2, unique=True)) if rest else []
    rest = [i for i in rest if i not in user_ids]
    modify_ids = draw(st.lists(st.sampled_from(rest), max_size=2, unique=True)) if rest else []
    events = [("ttl", i) for i in ttl_ids] + [("user", i) for i in user_ids] + [("modify", i) for i in modify_ids]
    again = draw(st.lists(st.sampled_from(ttl_ids), max_size=2, unique=True)) if ttl_ids else []
    rewritten = tuple((i, draw(st.booleans())) for i in again)
    return Batch(world, tuple(draw(st.permutations(events))), rewritten)


# Building a world in moto_server ------------------------------------------------------------------


def expires(ttl: Any, now: float) -> bool:
    """DynamoDB's rule: a Number TTL earlier than ``now`` (a ``(type, value)`` pair or an attribute)."""
    if ttl is None:
        return False
    if isinstance(ttl, tuple):
        return ttl[0] == "N" and ttl[1] < now
    return isinstance(ttl, dict) and "N" in ttl and Decimal(ttl["N"]) < now


def item_of(session: Session, world: World, upload_id: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {ID: {"S": session.id}, TYPE: {"S": "single" if session.upload == "none" else "multipart"}}
    ttl = TTL_VALUES[session.ttl]
    if ttl is not None:
        item[TTL] = {ttl[0]: str(ttl[1])}
        if world.expiry_index and session.shard is not None:
            shard = expiry_shard(session.id, world.shards) if session.shard == "auto" else session.shard
            item[SHARD] = {"S": shard}
    if session.status is not None:
        item[STATUS] = {"S": session.status}
    if session.key_is_number:
        item[KEY] = {"N": session.key or "42"}
    elif session.object_key:
        item[KEY] = {"S": session.object_key}
    if upload_id:
        item[UPLOAD_ID] = {"S": upload_id}
    return item


def create_table(dynamodb: Any, world: World) -> None:
    attributes = [{"AttributeName": ID, "AttributeType": "S"}]
    indexes: list[dict[str, Any]] = []
    if world.expiry_index:
        attributes += [{"AttributeName": SHARD, "AttributeType": "S"}, {"AttributeName": TTL, "AttributeType": "N"}]
        indexes.append(
            {
                "IndexName": EXPIRY_INDEX,
                "KeySchema": [{"AttributeName": SHARD, "KeyType": "HASH"}, {"AttributeName": TTL, "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        )
    if world.owner_index:
        attributes.append({"AttributeName": KEY, "AttributeType": "S"})
        indexes.append(
            {
                "IndexName": OWNER_INDEX,
                "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        )
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": ID, "KeyType": "HASH"}],
        AttributeDefinitions=attributes,
        BillingMode="PAY_PER_REQUEST",
        **({"GlobalSecondaryIndexes": indexes} if indexes else {}),
    )


def check_valid(world: World) -> None:
    """Refuse worlds DynamoDB itself would refuse (a GSI key attribute of the wrong type)."""
    for session in world.sessions:
        if world.expiry_index and session.ttl == "string":
            raise ValueError(f"{session.id!r}: a ttl of type S is refused by a table whose expiry index ranges on it")
        if world.owner_index and session.key_is_number:
            raise ValueError(f"{session.id!r}: a key of type N is refused by a table whose owner index hashes it")


@dataclass(frozen=True)
class State:
    """What a run may change: items (upload ids as labels), objects, keep marks and uploads (labels)."""

    items: dict[str, dict[str, Any]]
    objects: frozenset[str]
    marked: frozenset[str]
    uploads: frozenset[str]


@dataclass
class Built:
    """A world written into moto_server, with the observer's clients and stable upload labels."""

    server: MotoServer
    world: World
    dynamodb: Any
    s3: Any
    labels: dict[str, str] = field(default_factory=dict)

    def clients(self, faults: "Faults | None" = None) -> Callable[[str], Any]:
        """Fresh clients for a run (``faults`` hooked into them)."""
        made = {service: make_client(service, self.server.url) for service in ("dynamodb", "s3")}
        if faults:
            for client in made.values():
                faults.attach(client)
        return made.__getitem__

    def snapshot(self) -> State:
        items = {}
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=TABLE, ConsistentRead=True):
            for item in page["Items"]:
                if "S" in item.get(UPLOAD_ID, {}):
                    item[UPLOAD_ID] = {"S": self.labels.get(item[UPLOAD_ID]["S"], item[UPLOAD_ID]["S"])}
                items[item[ID]["S"]] = item
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        objects = frozenset(o["Key"] for page in pages for o in page.get("Contents", []))
        marked = frozenset(k for k in objects if KEEP_TAG in self.s3.get_object_tagging(Bucket=BUCKET, Key=k)["TagSet"])
        pages = self.s3.get_paginator("list_multipart_uploads").paginate(Bucket=BUCKET)
        uploads = frozenset(
            self.labels.get(u["UploadId"], f"unknown {u['Key']}") for page in pages for u in page.get("Uploads", [])
        )
        return State(items, objects, marked, uploads)


def build(server: MotoServer, world: World) -> Built:
    """The world, alone in a freshly reset moto_server."""
    check_valid(world)
    server.reset()
    built = Built(server, world, make_client("dynamodb", server.url), make_client("s3", server.url))
    create_table(built.dynamodb, world)
    if BUDGET_SUPPORTED:  # as the stack's budget_ledger: hash key "table", one record per swept table
        built.dynamodb.create_table(
            TableName=LEDGER,
            KeySchema=[{"AttributeName": "table", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "table", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    s3 = built.s3
    s3.create_bucket(Bucket=BUCKET)
    marked = {s.object_key for s in world.sessions if s.marked}
    written = sorted({k for s in world.sessions if s.has_object and (k := s.object_key)} | set(world.strays))
    for key in written:
        s3.put_object(
            Bucket=BUCKET, Key=key, Body=b"video", **({"Tagging": "expiry-kept=true"} if key in marked else {})
        )
    for number, session in enumerate(world.sessions):
        upload_id = None
        if session.upload == "gone":
            upload_id = f"gone-{number}"
        elif session.upload != "none" and session.object_key:
            upload_id = new_upload(s3, session.object_key, session.upload == "parts")
        if upload_id:
            built.labels[upload_id] = f"upload of {session.id!r}"
        built.dynamodb.put_item(TableName=TABLE, Item=item_of(session, world, upload_id))
    for number, (key, parts) in enumerate(world.stray_uploads):
        built.labels[new_upload(s3, key, parts)] = f"stray upload {number} of {key!r}"
    return built


def new_upload(s3: Any, key: str, with_part: bool) -> str:
    upload_id = str(s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"])
    if with_part:
        s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"part")
    return upload_id


# The stream: TTL's deletions as DynamoDB Streams delivers them -----------------------------------

TTL_PRINCIPAL = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


@dataclass
class Delivered:
    records: list[dict[str, Any]]
    ttl_images: list[dict[str, Any]]  # old images of TTL's deletions (upload ids as labels)
    other_images: list[dict[str, Any]]  # old images of records the cascade must ignore


def deliver(built: Built, batch: Batch) -> Delivered:
    """Do what the batch says to the table (TTL's and the application's deletions, changes, sessions
    written anew) and return the records DynamoDB Streams would deliver."""
    delivered = Delivered([], [], [])
    for number, (kind, session_id) in enumerate(batch.events):
        key = {ID: {"S": session_id}}
        if kind == "modify":
            old = built.dynamodb.get_item(TableName=TABLE, Key=key, ConsistentRead=True)["Item"]
        else:
            old = built.dynamodb.delete_item(TableName=TABLE, Key=key, ReturnValues="ALL_OLD")["Attributes"]
        record: dict[str, Any] = {
            "eventID": f"event-{number}",
            "eventName": "MODIFY" if kind == "modify" else "REMOVE",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "ApproximateCreationDateTime": NOW,
                "Keys": key,
                "OldImage": old,
                "SequenceNumber": str(1000 + number),
                "SizeBytes": 100,
                "StreamViewType": "OLD_IMAGE",
            },
        }
        if kind == "ttl":
            record["userIdentity"] = dict(TTL_PRINCIPAL)
        delivered.records.append(record)
        labelled = relabelled(old, built.labels)
        (delivered.ttl_images if kind == "ttl" else delivered.other_images).append(labelled)
    for session_id, same_key in batch.rewritten:
        old = next(i for i in delivered.ttl_images if i[ID]["S"] == session_id)
        item = {ID: {"S": session_id}, TTL: {"N": str(NOW + 30 * DAY)}, STATUS: {"S": STUCK}, TYPE: {"S": "single"}}
        if same_key and KEY in old:
            item[KEY] = old[KEY]
        elif not same_key:
            item[KEY] = {"S": object_key(session_id, "2025-08-22")}
        built.dynamodb.put_item(TableName=TABLE, Item=item)
    return delivered


def relabelled(item: dict[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    if "S" not in item.get(UPLOAD_ID, {}):
        return item
    return {**item, UPLOAD_ID: {"S": labels.get(item[UPLOAD_ID]["S"], item[UPLOAD_ID]["S"])}}


# Jobs as the stack program configures them -------------------------------------------------------


def s3_section(world: World) -> dict[str, Any]:
    section: dict[str, Any] = {
        "bucket": BUCKET,
        "key_attribute": KEY,
        "upload_id_attribute": UPLOAD_ID,
        "status_attribute": STATUS,
        "keep_statuses": list(KEPT),
        "keep_marker": STACK["uploadsKeepMarker"],
    }
    if world.owner_index and OWNER_INDEX_SUPPORTED:
        section["owner_index"] = OWNER_INDEX
    return section


def sweeper_job(world: World, mode: str = "sweep", **overrides: Any) -> Job:
    """The upload sweeper: ``mode`` "sweep" deletes expired sessions with the stuck rule (the stack's
    uploadsCascade sweep); "stream" only marks ahead and removes orphans (TTL and the cascade delete).
    One worker, so that every example replays the same calls."""
    raw: dict[str, Any] = {
        "kind": "sweep",
        "job_name": "upload-sweeper",
        "table_name": TABLE,
        "key_attributes": [ID],
        "ttl_attribute": TTL,
        "workers": 1,
        "plan_sample_size": 1000,
        "s3": {**s3_section(world), "mark_ahead_seconds": MARK_AHEAD},
        "orphaned_objects": {
            "prefix": PREFIX,
            "older_than_seconds": STACK["orphanAgeSeconds"],
            "id_pattern": KEY_PATTERN,
        },
        "breaker": {
            "max_share": STACK["breakerMaxSharePercent"] / 100,
            "allow_mass_deletion": STACK["allowMassDeletion"],
        },
        **({"budget_table_name": LEDGER} if BUDGET_SUPPORTED else {}),
    }
    if mode == "sweep":
        raw["stuck_uploads"] = {
            "status": STUCK,
            "older_than_seconds": STACK["stuckUploadSeconds"],
            "since_attribute": TTL,
            "partial_status": PARTIAL,
        }
    else:
        raw["delete_expired"] = False
    if world.expiry_index:
        raw |= {"expiry_index_name": EXPIRY_INDEX, "expiry_index_shards": world.shards, "expiry_shard_attribute": SHARD}
        raw["unindexed_check_items"] = UNINDEXED_CHECK_ITEMS
    return parse_job({**raw, **overrides})


def cascade_job(world: World, **overrides: Any) -> Job:
    """The upload cascade on the table's stream (TtlStreamCascade), one worker."""
    raw = {
        "kind": "stream-cascade",
        "job_name": "upload-cascade",
        "table_name": TABLE,
        "key_attributes": [ID],
        "ttl_attribute": TTL,
        "workers": 1,
        "s3": s3_section(world),
    }
    return parse_job({**raw, **overrides})


def dry(job: Job) -> Job:
    return dataclasses.replace(job, dry_run=True)


# Runs, crashes and renewals ----------------------------------------------------------------------


class Crash(BaseException):
    """The process died (Lambda's timeout, an out-of-memory kill): nothing after it runs. Raised as an
    exception so the test gets control back; what the run prints while it unwinds (``finally``,
    ``except BaseException``) is discarded, as a killed process prints nothing more."""


MUTATING = frozenset(
    {
        "DeleteItem",
        "UpdateItem",
        "PutItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "DeleteObject",
        "DeleteObjects",
        "PutObject",
        "PutObjectTagging",
        "DeleteObjectTagging",
        "AbortMultipartUpload",
        "CompleteMultipartUpload",
        "CopyObject",
    }
)


# Where a crash lands: after the Nth mutating call of any kind, or of one kind of effect.
CRASH_POINTS = (
    MUTATING,
    frozenset({"DeleteItem"}),
    frozenset({"DeleteObject", "DeleteObjects"}),
    frozenset({"AbortMultipartUpload"}),
    frozenset({"PutObjectTagging"}),
    frozenset({"UpdateItem"}),
)


class Faults:
    """botocore event hooks on a run's clients: an item renewed, finished (kept status) or whose key a
    new live session takes ("reuse") right before the run's DeleteItem/UpdateItem of it; and a crash
    after the Nth mutating call (of ``crash_on``) that succeeded. With ``lose_reply`` the process dies
    as the reply arrives: the call took effect and the run never learns it. Without, it dies between
    that call and the next mutating call: the reply was handled. Either way no call follows."""

    def __init__(
        self,
        observer: Any = None,
        renew: Mapping[str, str] | None = None,
        crash_after: int | None = None,
        crash_on: frozenset[str] = MUTATING,
        lose_reply: bool = True,
    ) -> None:
        self.observer, self.renew, self.crash_after = observer, dict(renew or {}), crash_after
        self.crash_on = crash_on  # the operations counted towards crash_after
        self.lose_reply = lose_reply
        self.renewed: set[str] = set()
        self.reused: set[str] = set()
        self.mutations = 0
        self.dead = False
        self.stream: io.StringIO | None = None  # the run's output, cut where the process died
        self.printed: int | None = None
        self.lock = threading.Lock()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build", self._before)
        client.meta.events.register("after-call", self._after)

    def _die(self) -> None:
        """Called with the lock held: the process is gone from now on."""
        self.dead = True
        if self.stream is not None:
            self.printed = len(self.stream.getvalue())  # all the dead process ever printed

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if self.dead:
            raise Crash("the process is gone")
        if not self.lose_reply and model.name in MUTATING:
            with self.lock:
                crash = self.crash_after is not None and self.mutations >= self.crash_after
                if crash:
                    self._die()
            if crash:
                raise Crash(f"killed after handling mutating call {self.crash_after}, before {model.name}")
        if model.name not in ("DeleteItem", "UpdateItem") or params.get("TableName") != TABLE:
            return
        session_id = params.get("Key", {}).get(ID, {}).get("S")
        how = self.renew.get(session_id)
        with self.lock:
            if not how or session_id in self.renewed or session_id in self.reused:
                return
            (self.reused if how == "reuse" else self.renewed).add(session_id)
        if how == "reuse":
            self._reuse(session_id)
            return
        names, values = {"#t": TTL}, {":t": {"N": str(NOW + 30 * DAY)}}
        expression = "SET #t = :t"
        if how == "finish":
            names["#s"], values[":s"] = STATUS, {"S": KEPT[0]}
            expression += ", #s = :s"
        self.observer.update_item(
            TableName=TABLE,
            Key={ID: {"S": session_id}},
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def _reuse(self, session_id: str) -> None:
        """A new live session takes the object key of the session about to be deleted."""
        old = self.observer.get_item(TableName=TABLE, Key={ID: {"S": session_id}}, ConsistentRead=True).get("Item")
        if not old or KEY not in old:
            return
        item = {ID: {"S": f"{session_id}~new"}, TTL: {"N": str(NOW + 30 * DAY)}, STATUS: {"S": STUCK}, KEY: old[KEY]}
        self.observer.put_item(TableName=TABLE, Item={**item, TYPE: {"S": "single"}})

    def _after(self, http_response: Any, model: Any, **_: Any) -> None:
        if model.name not in self.crash_on or not 200 <= http_response.status_code < 300:
            return
        with self.lock:
            self.mutations += 1
            crash = self.lose_reply and self.mutations == self.crash_after
            if crash:
                self._die()
        if crash:
            raise Crash(f"killed as the reply of mutating call {self.crash_after} ({model.name}) arrived")


class Context:
    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class Outcome:
    summary: dict[str, Any] | None  # None when the run crashed
    lines: list[dict[str, Any]]

    @property
    def emf(self) -> Counter[str]:
        """Every metric the run printed, summed over its EMF lines."""
        total: Counter[str] = Counter()
        for line in self.lines:
            if "_aws" in line:
                for metric in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                    total[metric["Name"]] += line[metric["Name"]]
        return total


def run(job: Job, work: Work, now: float, event: Any = None, faults: Faults | None = None) -> Outcome:
    """One run as its handler does it; a crash ends it with what it printed before it died."""
    stream = io.StringIO()
    if faults:
        faults.stream = stream
    summary = None
    with contextlib.suppress(Crash):
        summary = run_job(job, work, Context(), clock=lambda: now, stream=stream, event=event)
    printed = stream.getvalue()
    if faults and faults.printed is not None:
        summary, printed = None, printed[: faults.printed]
    lines = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    return Outcome(summary, lines)


def sweep(built: Built, job: Job, now: float = NOW, faults: Faults | None = None, event: Any = None) -> Outcome:
    return run(job, sweep_work(built.clients(faults)), now, event, faults)


def cascade(built: Built, job: Job, delivered: Delivered, faults: Faults | None = None) -> Outcome:
    records = delivered.records
    return run(job, stream_work(built.clients(faults), records), NOW, {"Records": records}, faults)


# The invariant ----------------------------------------------------------------------------------

EFFECTS = ("items deleted", "items marked for review", "objects deleted", "uploads aborted", "objects marked kept")
METRICS = {
    m.ITEMS_DELETED: "items deleted",
    m.ITEMS_MARKED: "items marked for review",
    m.OBJECTS_DELETED: "objects deleted",
    m.ORPHANS_DELETED: "objects deleted",
    m.UPLOADS_ABORTED: "uploads aborted",
    m.OBJECTS_MARKED_KEPT: "objects marked kept",
}
PLANNED = {
    "items_to_delete": "items deleted",
    "items_to_mark": "items marked for review",
    "objects_to_delete": "objects deleted",
    "orphans_to_delete": "objects deleted",
    "uploads_to_abort": "uploads aborted",
    "orphan_uploads_to_abort": "uploads aborted",
    "objects_to_mark": "objects marked kept",
}
NOT_EFFECTS = {"items_to_archive"}  # the archive is another bucket


def text(item: Mapping[str, Any], attribute: str) -> str | None:
    value = item.get(attribute)
    return value.get("S") if isinstance(value, dict) else None


def effects(before: State, after: State) -> dict[str, int]:
    """What a run did, from snapshots."""
    return {
        "items deleted": len(before.items.keys() - after.items.keys()),
        "items marked for review": sum(
            text(item, STATUS) != PARTIAL and text(after.items[i], STATUS) == PARTIAL
            for i, item in before.items.items()
            if i in after.items
        ),
        "objects deleted": len(before.objects - after.objects),
        "uploads aborted": len(before.uploads - after.uploads),
        "objects marked kept": len((after.marked & before.objects) - before.marked),
    }


def effects_of_runs(*states: State) -> dict[str, int]:
    """The effects of consecutive runs, from the snapshots before, between and after them (an item
    marked for review by one run and deleted by the next counts in both)."""
    total = dict.fromkeys(EFFECTS, 0)
    for before, after in itertools.pairwise(states):
        for name, value in effects(before, after).items():
            total[name] += value
    return total


def counted(*outcomes: Outcome) -> dict[str, int]:
    """What the runs' metrics say they did."""
    total = dict.fromkeys(EFFECTS, 0)
    for outcome in outcomes:
        for metric, effect in METRICS.items():
            total[effect] += int(outcome.emf[metric])
    return total


def planned(outcome: Outcome) -> dict[str, int]:
    """What a run planned: a sweep's plan (nothing when refused), or a cascade's dry-run counts."""
    assert outcome.summary is not None, "the run crashed"
    plan = outcome.summary.get("plan")
    counts = plan["counts"] if plan is not None else outcome.summary["counts"]
    total = dict.fromkeys(EFFECTS, 0)
    if plan is not None and plan.get("refused"):
        return total
    unknown = sorted(n for n in counts if "_to_" in n and n not in PLANNED and n not in NOT_EFFECTS)
    assert not unknown, f"plan counts {unknown} are not mapped to an effect in hostile_worlds.PLANNED"
    for name, effect in PLANNED.items():
        total[effect] += int(counts.get(name, 0))
    return total


def mismatch(what: str, left: Mapping[str, int], right: Mapping[str, int]) -> list[str]:
    return [f"{what}: {name} {left[name]} != {right[name]}" for name in EFFECTS if left[name] != right[name]]


def crash_count_problems(counts: Mapping[str, int], done: Mapping[str, int], lose_reply: bool) -> list[str]:
    """The metrics of a crashed run and its rerun against their effects. Killed between calls, they
    are equal. Killed as a call's reply arrives, that call took effect and nothing was left to count
    it (no run can tell who deleted a thing that is gone): the metrics may fall short by that one
    effect (one call in flight: the runs here have one worker) and never exceed the effects."""
    if not lose_reply:
        return mismatch("metrics of both runs vs effects", counts, done)
    over = [f"metrics of both runs exceed effects: {n} {counts[n]} > {done[n]}" for n in EFFECTS if counts[n] > done[n]]
    missing = sum(done[n] - counts[n] for n in EFFECTS if done[n] > counts[n])
    return [
        *over,
        *([f"metrics of both runs miss {missing} effects, more than the call in flight"] if missing > 1 else []),
    ]


def holders(items: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Object key -> the ids of the items naming it."""
    named: dict[str, list[str]] = {}
    for item_id, item in items.items():
        if key := text(item, KEY):
            named.setdefault(key, []).append(item_id)
    return named


def _lost_objects(before: State, after: State, protected: Mapping[str, str]) -> list[str]:
    return [
        f"object {key!r} was deleted although {why}"
        for key, why in sorted(protected.items())
        if key in before.objects and key not in after.objects
    ]


def _protected_by_existing(after: State) -> dict[str, str]:
    return {key: f"item(s) {ids} still name it" for key, ids in holders(after.items).items()}


def _uploads_lost(before: State, after: State, items: Mapping[str, Mapping[str, Any]], why: str) -> list[str]:
    return [
        f"{label} was aborted although {why} {item_id!r} names it"
        for item_id, item in items.items()
        if (label := text(item, UPLOAD_ID)) and label in before.uploads and label not in after.uploads
    ]


def sweep_problems(before: State, after: State, now: float, renewed: frozenset[str] = frozenset()) -> list[str]:
    """The safety half of the invariant for a sweep at ``now`` (``renewed``: items renewed mid-run)."""
    problems: list[str] = []
    protected = _protected_by_existing(after)
    kept_keys: set[str] = set()
    for item_id, item in before.items.items():
        key = text(item, KEY)
        live = item_id in renewed or not expires(item.get(TTL), now)
        kept = text(item, STATUS) in KEPT
        if live and item_id not in after.items:
            problems.append(f"live item {item_id!r} was deleted")
        elif live and item_id not in renewed and after.items[item_id] != item:
            problems.append(f"live item {item_id!r} was altered: {item} -> {after.items[item_id]}")
        elif not live and item_id in after.items and after.items[item_id] != item:
            stuck_rule = text(item, STATUS) == STUCK and after.items[item_id] == {**item, STATUS: {"S": PARTIAL}}
            if not stuck_rule:
                problems.append(f"expired item {item_id!r} was altered: {item} -> {after.items[item_id]}")
        if key and (live or kept):
            protected.setdefault(key, f"{'live' if live else 'kept'} item {item_id!r} names it")
        if key and kept:
            kept_keys.add(key)
            if item_id not in after.items and key in after.objects and key not in after.marked:
                problems.append(f"object {key!r} of kept item {item_id!r} is not marked now that the item is gone")
    problems += _lost_objects(before, after, protected)
    problems += _uploads_lost(before, after, after.items, "item")
    for key in sorted((after.marked & before.objects) - before.marked - kept_keys):
        problems.append(f"object {key!r} was marked kept although no item in a kept status names it")
    return problems


def stream_problems(before: State, after: State, delivered: Delivered) -> list[str]:
    """The safety half of the invariant for a stream cascade over ``delivered``."""
    problems = [
        f"item {i!r} was written by the cascade: {before.items.get(i)} -> {after.items.get(i)}"
        for i in sorted(before.items.keys() | after.items.keys())
        if before.items.get(i) != after.items.get(i)
    ]
    protected = _protected_by_existing(after)
    ttl_keys = {k for image in delivered.ttl_images if (k := text(image, KEY))}
    kept_keys: set[str] = set()
    for image in delivered.ttl_images:
        if (key := text(image, KEY)) and text(image, STATUS) in KEPT:
            kept_keys.add(key)
            protected.setdefault(key, f"TTL removed {image[ID]['S']!r} in a kept status")
            if key in after.objects and key not in after.marked:
                problems.append(f"object {key!r} of kept item {image[ID]['S']!r} is not marked")
    for image in delivered.other_images:
        if (key := text(image, KEY)) and key not in ttl_keys:
            protected.setdefault(key, f"only a record that is not TTL's names it ({image[ID]['S']!r})")
    problems += _lost_objects(before, after, protected)
    problems += _uploads_lost(before, after, after.items, "item")
    others = {f"(not TTL) {image[ID]['S']}": image for image in delivered.other_images}
    problems += _uploads_lost(before, after, others, "only the record")
    for key in sorted((after.marked & before.objects) - before.marked - kept_keys):
        problems.append(f"object {key!r} was marked kept although no TTL deletion in a kept status names it")
    return problems


def unfinished(clean_before: State, clean_after: State, got: State) -> list[str]:
    """What the run without the crash did (``clean_before`` -> ``clean_after``, on a copy of the
    world) that is not done in ``got``: what the crashed run owned and the rerun left behind. (A
    rerun may do more, later decisions on the same things; the safety checks judge that.)"""
    left = [
        f"item {i!r} is left behind (the run without the crash deleted it)"
        for i in sorted(clean_before.items.keys() - clean_after.items.keys())
        if i in got.items
    ]
    left += [
        f"item {i!r} is not marked for review (the run without the crash marked it)"
        for i, item in sorted(clean_after.items.items())
        if i in clean_before.items
        and text(item, STATUS) == PARTIAL != text(clean_before.items[i], STATUS)
        and i in got.items
        and text(got.items[i], STATUS) != PARTIAL
    ]
    left += [
        f"object {k!r} is left behind (the run without the crash deleted it)"
        for k in sorted(clean_before.objects - clean_after.objects)
        if k in got.objects
    ]
    left += [
        f"{label} is left behind (the run without the crash aborted it)"
        for label in sorted(clean_before.uploads - clean_after.uploads)
        if label in got.uploads
    ]
    left += [
        f"object {k!r} is not marked kept (the run without the crash marked it)"
        for k in sorted(clean_after.marked - clean_before.marked)
        if k in got.objects and k not in got.marked
    ]
    return left


def differences(expected: State, got: State) -> list[str]:
    """How ``got`` differs from ``expected``."""
    found = [
        f"item {i!r}: expected {expected.items.get(i)}, got {got.items.get(i)}"
        for i in sorted(expected.items.keys() | got.items.keys())
        if expected.items.get(i) != got.items.get(i)
    ]
    for what, want, have in (
        ("objects", expected.objects, got.objects),
        ("marked objects", expected.marked, got.marked),
        ("uploads", expected.uploads, got.uploads),
    ):
        if left := sorted(have - want):
            found.append(f"{what} left behind: {left}")
        if missing := sorted(want - have):
            found.append(f"{what} missing: {missing}")
    return found


def explain(problems: list[str], *context: Any) -> str:
    return "\n".join(["the invariant does not hold:", *(f"  - {p}" for p in problems), *map(str, context)])
