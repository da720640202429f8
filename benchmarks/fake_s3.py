"""A low-CPU fake S3 endpoint for the orphan pass benchmark: an asyncio HTTP server (path-style
requests) answering ListObjectsV2, GetObject and HeadObject, sleeping a fixed RTT per request without
burning CPU, and counting requests and bytes sent.

Two buckets: the source bucket holds ``objects`` keys made on the fly from their number (never held in
memory), in key order, each 1 MB and 30 days old; the destination bucket holds that bucket's S3
Inventory report as S3 lays it out (``<prefix>/<source>/<id>/<time>/manifest.json``, its
``manifest.checksum`` and gzip CSV data files of ``rows_per_file`` rows, keys URL-encoded). Listing pages
hold up to 1,000 keys, as S3's do. Two extra routes drive a run: ``POST /_bench/reset`` and
``POST /_bench/stats``.

    python benchmarks/fake_s3.py --port 8766
"""

import argparse
import asyncio
import csv
import datetime as dt
import gzip
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote_plus, unquote, urlsplit
from xml.sax.saxutils import escape

SOURCE, DESTINATION = "uploads-bucket", "inventory-bucket"
INVENTORY_PREFIX, INVENTORY_ID = "inventory", "daily"
PREFIX = "uploads/"
OBJECT_SIZE = 1024 * 1024
MODIFIED = "2026-11-01T00:00:00.000Z"  # 30 days before the benchmark's clock
REPORT_FOLDER = "2026-12-01T01-00Z"
REPORT_CREATED_MS = int(dt.datetime(2026, 12, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
PAGE_KEYS = 1000
NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def source_key(n: int) -> str:
    """The ``n``-th key of the source bucket (fixed width, so key order is number order)."""
    return f"{PREFIX}u{n:09d}/object.bin"


def inventory_files(objects: int, rows_per_file: int) -> dict[str, bytes]:
    """The report's objects in the destination bucket, keyed by their key."""
    root = f"{INVENTORY_PREFIX}/{SOURCE}/{INVENTORY_ID}/"
    files: dict[str, bytes] = {}
    entries = []
    for number, start in enumerate(range(0, objects, rows_per_file)):
        text = io.StringIO()
        writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for n in range(start, min(objects, start + rows_per_file)):
            writer.writerow([SOURCE, quote_plus(source_key(n), safe="/"), OBJECT_SIZE, MODIFIED])
        data = gzip.compress(text.getvalue().encode(), compresslevel=6)
        key = f"{root}data/{number:04d}.csv.gz"
        files[key] = data
        entries.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    manifest = json.dumps(
        {
            "sourceBucket": SOURCE,
            "destinationBucket": f"arn:aws:s3:::{DESTINATION}",
            "version": "2016-11-30",
            "creationTimestamp": str(REPORT_CREATED_MS),
            "fileFormat": "CSV",
            "fileSchema": "Bucket, Key, Size, LastModifiedDate",
            "files": entries,
        }
    ).encode()
    files[f"{root}{REPORT_FOLDER}/manifest.json"] = manifest
    files[f"{root}{REPORT_FOLDER}/manifest.checksum"] = hashlib.md5(manifest).hexdigest().encode()
    return files


@dataclass
class FakeS3:
    objects: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    rtt_seconds: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    bytes_sent: Counter[str] = field(default_factory=Counter)

    def reset(self, body: dict[str, int]) -> dict[str, int]:
        self.objects = body["objects"]
        self.files = inventory_files(self.objects, body["rows_per_file"])
        self.rtt_seconds = body["rtt_ms"] / 1000
        self.requests.clear()
        self.bytes_sent.clear()
        return {"files": len(self.files), "bytes": sum(len(v) for v in self.files.values())}

    def first_at_or_after(self, key: str) -> int:
        """The number of the first source key >= ``key``."""
        low, high = 0, self.objects
        while low < high:
            middle = (low + high) // 2
            if source_key(middle) < key:
                low = middle + 1
            else:
                high = middle
        return low

    def list_source(self, prefix: str, start: int, max_keys: int) -> tuple[list[tuple[str, int]], int | None]:
        found: list[tuple[str, int]] = []
        n = max(start, self.first_at_or_after(prefix))
        while n < self.objects and len(found) < max_keys:
            key = source_key(n)
            if not key.startswith(prefix):
                return found, None
            found.append((key, OBJECT_SIZE))
            n += 1
        return found, n if n < self.objects and source_key(n).startswith(prefix) else None

    def list_destination(self, prefix: str, delimiter: str) -> tuple[list[tuple[str, int]], list[str]]:
        contents, common = [], []
        for key in sorted(k for k in self.files if k.startswith(prefix)):
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                folder = prefix + rest.split(delimiter, 1)[0] + delimiter
                if folder not in common:
                    common.append(folder)
            else:
                contents.append((key, len(self.files[key])))
        return contents, common

    def list_objects(self, bucket: str, query: dict[str, str]) -> tuple[int, bytes]:
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        max_keys = min(PAGE_KEYS, int(query.get("max-keys", PAGE_KEYS)))
        token: int | None = None
        common: list[str] = []
        if bucket == SOURCE:
            start = int(query.get("continuation-token", "0"))
            contents, token = self.list_source(prefix, start, max_keys)
        elif bucket == DESTINATION:
            contents, common = self.list_destination(prefix, delimiter)
        else:
            return 404, error_xml("NoSuchBucket", bucket)
        parts = [f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{NS}">']
        parts.append(f"<Name>{bucket}</Name><Prefix>{escape(prefix)}</Prefix><MaxKeys>{max_keys}</MaxKeys>")
        parts.append(f"<KeyCount>{len(contents) + len(common)}</KeyCount>")
        parts.append(f"<IsTruncated>{'true' if token is not None else 'false'}</IsTruncated>")
        if token is not None:
            parts.append(f"<NextContinuationToken>{token}</NextContinuationToken>")
        for key, size in contents:
            parts.append(
                f"<Contents><Key>{escape(key)}</Key><LastModified>{MODIFIED}</LastModified>"
                f'<ETag>"{hashlib.md5(key.encode()).hexdigest()}"</ETag><Size>{size}</Size>'
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        parts += [f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in common]
        parts.append("</ListBucketResult>")
        return 200, "".join(parts).encode()

    def answer(self, method: str, target: str) -> tuple[int, bytes, dict[str, str]]:
        """Status, body and extra headers for one request."""
        url = urlsplit(target)
        bucket, _, key = unquote(url.path.lstrip("/")).partition("/")
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if not key and query.get("list-type") == "2":
            self.requests["ListObjectsV2"] += 1
            status, body = self.list_objects(bucket, query)
            self.bytes_sent["ListObjectsV2"] += len(body)
            return status, body, {"Content-Type": "application/xml"}
        operation = "HeadObject" if method == "HEAD" else "GetObject"
        self.requests[operation] += 1
        if bucket == DESTINATION and key in self.files:
            body = self.files[key]
            self.bytes_sent[operation] += len(body) if method == "GET" else 0
            return 200, body, {"ETag": f'"{hashlib.md5(body).hexdigest()}"', "Last-Modified": "Mon, 01 Dec 2026"}
        return 404, error_xml("NoSuchKey", key), {"Content-Type": "application/xml"}


def error_xml(code: str, resource: str) -> bytes:
    return (
        f"<Error><Code>{code}</Code><Message>{code}</Message><Resource>{escape(resource)}</Resource></Error>".encode()
    )


async def serve_connection(fake: FakeS3, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1, one request at a time per connection, the RTT slept before each reply."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            extra: dict[str, str] = {}
            if target.startswith("/_bench/"):
                answer = (
                    fake.reset(json.loads(body))
                    if target == "/_bench/reset"
                    else {
                        "requests": dict(fake.requests),
                        "bytes": dict(fake.bytes_sent),
                    }
                )
                status, reply = 200, json.dumps(answer).encode()
            else:
                status, reply, extra = fake.answer(method, target)
                await asyncio.sleep(fake.rtt_seconds)
            reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
            head_lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(reply)}", "x-amz-request-id: fake"]
            head_lines += [f"{k}: {v}" for k, v in extra.items()]
            writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode() + (reply if method != "HEAD" else b""))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    fake = FakeS3()
    server = await asyncio.start_server(lambda r, w: serve_connection(fake, r, w), "127.0.0.1", port, backlog=256)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
