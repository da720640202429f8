"""S3 Inventory reports as the orphan pass's list of a bucket too large to list every run: the
newest daily report's manifest, found where S3 publishes it and checked, and its gzip CSV data files
streamed row by row.

Layout (AWS, "Locating your inventory list"): ``<destination-prefix>/<source-bucket>/<config-ID>/
<YYYY-MM-DDTHH-MMZ>/manifest.json``, beside it ``manifest.checksum`` (the MD5 of manifest.json), and
the data files it names under ``.../data/``. A CSV report quotes every field and URL-encodes keys
as a form does (a space is ``+``, a ``+`` is ``%2B``)."""

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError

from expiry.runtime.jobs.config import OrphanedObjects, inventory_reports_prefix
from expiry.runtime.jobs.run_control import Tally
from expiry.runtime.s3.objects import MISSING, Orphan, error_code

REPORT_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z/")
REQUIRED_COLUMNS = ("Key", "LastModifiedDate")
FUTURE_SLACK_SECONDS = 300  # a report "created" later than this ahead of the clock is refused
STOP_CHECK_ROWS = 10_000  # rows read between two looks at the run's deadline
READ_CHUNK = 1 << 20


class InventoryError(Exception):
    """A report that fails its checks (checksums, source bucket, format, schema, rows): none of it is used."""


@dataclass(frozen=True)
class Manifest:
    """One report: where its manifest is, when S3 began it, its columns and its data files."""

    destination_bucket: str
    key: str
    source_bucket: str
    created: float
    """creationTimestamp, epoch seconds: every object the report lists existed then."""
    columns: tuple[str, ...]
    files: tuple[str, ...]
    """Keys of the gzip CSV data files in the destination bucket."""
    checksums: tuple[str | None, ...] = ()
    """The MD5 (hex) of each data file the manifest gives, in the order of ``files``."""


@dataclass(frozen=True)
class InventoryObject:
    key: str
    size: int
    last_modified: float


def _read(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes; None when it does not exist."""
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error_code(error) in MISSING:
            return None
        raise
    return body


def _report_folders(s3: Any, bucket: str, root: str) -> list[str]:
    """The dated report folders under ``root``, newest first."""
    folders: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            folder = common["Prefix"][len(root) :]
            if REPORT_FOLDER.fullmatch(folder):
                folders.append(common["Prefix"])
    return sorted(folders, reverse=True)


def latest_manifest(
    s3: Any,
    destination_bucket: str,
    destination_prefix: str,
    source_bucket: str,
    inventory_id: str,
    now: float,
    max_age_seconds: int,
    why: Callable[[str], None] | None = None,
) -> Manifest | None:
    """The newest report's manifest, checked; None when there is none or it is older than
    ``max_age_seconds`` (``why`` is told which). A folder without manifest.json is a report still
    being delivered: the one before it is taken. Raises InventoryError when the manifest fails a check."""
    root = inventory_reports_prefix(destination_prefix, source_bucket, inventory_id)
    for folder in _report_folders(s3, destination_bucket, root):
        key = f"{folder}manifest.json"
        body = _read(s3, destination_bucket, key)
        if body is None:
            continue
        checksum = _read(s3, destination_bucket, f"{folder}manifest.checksum")
        if (
            checksum is not None
            and checksum.decode("ascii", "replace").strip().lower() != hashlib.md5(body).hexdigest()
        ):
            raise InventoryError(f"s3://{destination_bucket}/{key}: does not match its manifest.checksum")
        manifest = parse_manifest(body, destination_bucket, key, source_bucket, root)
        if manifest.created > now + FUTURE_SLACK_SECONDS:
            raise InventoryError(f"s3://{destination_bucket}/{key}: creationTimestamp is in the future")
        age = now - manifest.created
        if age > max_age_seconds:
            if why:
                why(
                    f"the newest inventory report s3://{destination_bucket}/{key} is {age / 3600:.1f} hours old "
                    f"(max_age_hours {max_age_seconds // 3600})"
                )
            return None
        return manifest
    if why:
        why(f"no inventory report under s3://{destination_bucket}/{root}")
    return None


def parse_manifest(body: bytes, destination_bucket: str, key: str, source_bucket: str, root: str) -> Manifest:
    """A manifest.json, checked: this source bucket's CSV report with keys and modification times,
    whose data files lie under the configuration's folder."""
    where = f"s3://{destination_bucket}/{key}"
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InventoryError(f"{where}: is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise InventoryError(f"{where}: is not a JSON object")
    if raw.get("sourceBucket") != source_bucket:
        raise InventoryError(f"{where}: sourceBucket is {raw.get('sourceBucket')!r}, not {source_bucket!r}")
    destination = raw.get("destinationBucket")
    if destination is not None and (
        not isinstance(destination, str) or destination.split(":::")[-1] != destination_bucket
    ):
        raise InventoryError(f"{where}: destinationBucket is {destination!r}, not {destination_bucket!r}")
    if raw.get("fileFormat") != "CSV":
        raise InventoryError(f"{where}: fileFormat is {raw.get('fileFormat')!r}; only CSV reports are read")
    schema = raw.get("fileSchema")
    columns = tuple(column.strip() for column in schema.split(",")) if isinstance(schema, str) else ()
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing or len(set(columns)) != len(columns):
        raise InventoryError(f"{where}: fileSchema {schema!r} lacks {missing} or repeats a column")
    stamp = raw.get("creationTimestamp")
    if not (isinstance(stamp, str) and re.fullmatch(r"[0-9]{1,16}", stamp)) and not (type(stamp) is int and stamp >= 0):
        raise InventoryError(f"{where}: creationTimestamp must be epoch milliseconds, got {stamp!r}")
    files = raw.get("files")
    if not isinstance(files, list):
        raise InventoryError(f"{where}: files must be a list, got {files!r}")
    keys: list[str] = []
    checksums: list[str | None] = []
    for i, entry in enumerate(files):
        data_key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(data_key, str) or not data_key.startswith(root):
            raise InventoryError(f"{where}: files[{i}].key must be a data file under {root!r}, got {data_key!r}")
        md5 = entry.get("MD5checksum")
        if md5 is not None and not (isinstance(md5, str) and re.fullmatch(r"[0-9a-fA-F]{32}", md5)):
            raise InventoryError(f"{where}: files[{i}].MD5checksum must be an MD5 in hex, got {md5!r}")
        keys.append(data_key)
        checksums.append(md5.lower() if md5 else None)
    return Manifest(
        destination_bucket=destination_bucket,
        key=key,
        source_bucket=source_bucket,
        created=int(stamp) / 1000,
        columns=columns,
        files=tuple(keys),
        checksums=tuple(checksums),
    )


class _Hashed(io.RawIOBase):
    """A byte stream that feeds an MD5 with everything read from it."""

    def __init__(self, body: Any, digest: Any) -> None:
        self.body, self.digest = body, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self.body.read(len(buffer))
        self.digest.update(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _timestamp(text: str) -> float:
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def inventory_objects(s3: Any, manifest: Manifest) -> Iterator[InventoryObject]:
    """Every current object the report lists: delete markers and versions that are not the latest
    are skipped when the report has those columns. Each data file's MD5 is checked once it is read
    whole; InventoryError on a mismatch, a missing file or a row that does not read."""
    columns = {name: i for i, name in enumerate(manifest.columns)}
    key_at, modified_at = columns["Key"], columns["LastModifiedDate"]
    size_at, bucket_at = columns.get("Size"), columns.get("Bucket")
    latest_at, marker_at = columns.get("IsLatest"), columns.get("IsDeleteMarker")
    checksums = manifest.checksums or (None,) * len(manifest.files)
    for data_key, expected in zip(manifest.files, checksums, strict=True):
        where = f"s3://{manifest.destination_bucket}/{data_key}"
        try:
            body = s3.get_object(Bucket=manifest.destination_bucket, Key=data_key)["Body"]
        except ClientError as error:
            if error_code(error) in MISSING:
                raise InventoryError(f"{where}: named by {manifest.key} but missing") from error
            raise
        digest = hashlib.md5()
        raw = _Hashed(body, digest)
        try:
            text = io.TextIOWrapper(gzip.GzipFile(fileobj=io.BufferedReader(raw, READ_CHUNK)), "utf-8", newline="")
            for line, row in enumerate(csv.reader(text, strict=True), 1):
                if len(row) != len(columns):
                    raise InventoryError(f"{where}: row {line} has {len(row)} fields, the schema {len(columns)}")
                if bucket_at is not None and row[bucket_at] != manifest.source_bucket:
                    raise InventoryError(f"{where}: row {line} is of bucket {row[bucket_at]!r}")
                if (latest_at is not None and row[latest_at] == "false") or (
                    marker_at is not None and row[marker_at] == "true"
                ):
                    continue
                yield InventoryObject(
                    key=unquote_plus(row[key_at], errors="strict"),
                    size=int(row[size_at]) if size_at is not None and row[size_at] else 0,
                    last_modified=_timestamp(row[modified_at]),
                )
            while raw.read(READ_CHUNK):  # what the gzip reader left unread still counts in the MD5
                pass
        except (OSError, EOFError, UnicodeDecodeError, csv.Error, ValueError) as error:
            raise InventoryError(f"{where}: does not read as a gzip CSV report: {error}") from error
        if expected and digest.hexdigest() != expected:
            raise InventoryError(f"{where}: does not match its MD5checksum in {manifest.key}")


def orphan_candidates(
    s3: Any,
    manifest: Manifest,
    settings: OrphanedObjects,
    now: float,
    tally: Tally,
    skip: Callable[[str], bool],
    should_stop: Callable[[], bool],
) -> Iterator[Orphan]:
    """Objects the report lists under the prefix, modified before the report began and longer than
    the grace ago, not ``skip``ped, whose key the owner rule parses (others are counted and left
    alone). The same candidates as a listing's, as of the report's time."""
    for read, obj in enumerate(inventory_objects(s3, manifest), 1):
        if read % STOP_CHECK_ROWS == 0 and should_stop():
            return
        tally.add("objects_inventoried")
        if not obj.key.startswith(settings.prefix) or obj.last_modified >= manifest.created:
            continue
        if now - obj.last_modified < settings.older_than_seconds or skip(obj.key):
            continue
        owner = settings.owner(obj.key)
        if not owner:
            tally.add("objects_unparsed")
            continue
        yield Orphan(obj.key, owner)
