"""Sweep benchmark: the sweeper with a Lambda's CPU share against a fake DynamoDB with network latency.

Each run is a subprocess under a CPU quota equal to the share Lambda gives a memory size (memory /
1,769 MB of one vCPU), talking HTTP to `fake_dynamodb.py`, which answers from an in-memory table and
sleeps the RTT without using CPU. The quota is a cgroup's (v2 `cpu.max`, or v1 `cpu.cfs_quota_us` where
the cpu controller is bound to v1); without a writable cpu controller the runs are unlimited, which
the output says. Compares the naive loop (Scan, then DeleteItem one at a time) with Expiry's
sweep at several memory sizes and worker counts. Prints Markdown tables. Figures, not a test.

    venv/bin/python benchmarks/sweep_benchmark.py [--items 100000] [--expired-share 0.01]
"""

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from expiry.runtime.jobs.cpu import FULL_VCPU_MB  # noqa: E402 (Lambda gives one vCPU at 1,769 MB)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
NOW = 1_700_000_000
SHARDS = 10
STREAM_BATCH = 100  # records per invocation of a stream-triggered Lambda


def cpu_share(memory_mb: int) -> float:
    return memory_mb / FULL_VCPU_MB


class CpuQuota:
    """cgroups limiting their processes to a share of one CPU, removed on close."""

    def __init__(self) -> None:
        self.groups: list[Path] = []
        self.root: Path | None
        v2 = CGROUP_ROOT / "cgroup.controllers"
        if v2.exists() and "cpu" in v2.read_text().split():
            self.root, self.kind = CGROUP_ROOT, "cgroup v2 cpu.max"
        elif (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").exists():
            self.root, self.kind = CGROUP_ROOT / "cpu", "cgroup v1 cpu.cfs_quota_us"
        else:
            self.root, self.kind = None, "none (no cpu controller: runs are not limited)"
        if self.root is not None and not os.access(self.root, os.W_OK):
            self.root, self.kind = None, f"none ({self.root} is not writable: runs are not limited)"

    def group(self, share: float, slot: int = 0) -> Path | None:
        """A cgroup limited to ``share`` of a CPU (None when quotas are unavailable); each ``slot``
        has its own quota (concurrent Lambda invocations each have their memory's share)."""
        if self.root is None:
            return None
        path = self.root / f"expiry-bench-{os.getpid()}-{round(share * 1000)}{f'-{slot}' if slot else ''}"
        if path in self.groups:
            return path
        path.mkdir()
        quota = max(1000, round(share * PERIOD_US))
        if self.kind.startswith("cgroup v2"):
            (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        self.groups.append(path)
        return path

    def close(self) -> None:
        for path in self.groups:
            path.rmdir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def fake_endpoint() -> Iterator[str]:
    """A fake DynamoDB in its own process (outside any quota); its URL."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "fake_dynamodb.py"), "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait()


def admin(url: str, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"X-Amz-Target": "Bench." + operation})
    with urllib.request.urlopen(request) as reply:
        result: dict[str, Any] = json.loads(reply.read())
        return result


def run_case(url: str, quotas: CpuQuota, case: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """Reset the table, run ``case`` in a subprocess under its memory's CPU share; its result and the
    endpoint's counts."""
    admin(url, "Reset", {**table, "now": NOW, "shards": SHARDS})
    group = quotas.group(cpu_share(case["memory_mb"]))

    def join() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(case["memory_mb"]),
    }
    child = {**case, "items": table["items"], "expired": table["expired"]}
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(child)],
        env=env,
        preexec_fn=join,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, **admin(url, "Stats", {})}


# The variants, run inside the limited subprocess ----------------------------------------------------


def naive_loop(dynamodb: Any, _: dict[str, Any]) -> int:
    """The naive loop: a filtered Scan of the whole table, then DeleteItem one at a time."""
    kwargs: dict[str, Any] = {
        "TableName": "bench",
        "FilterExpression": "#t < :now",
        "ExpressionAttributeNames": {"#t": "ttl"},
        "ExpressionAttributeValues": {":now": {"N": str(NOW)}},
    }
    expired = []
    while True:
        page = dynamodb.scan(**kwargs)
        expired += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    for item in expired:
        dynamodb.delete_item(TableName="bench", Key={"id": item["id"]})
    return len(expired)


def expiry_sweep(dynamodb: Any, case: dict[str, Any]) -> int:
    from expiry.runtime.handlers.work import sweep_work
    from expiry.runtime.jobs.config import parse_job
    from expiry.runtime.jobs.runner import run_job

    settings: dict[str, Any] = {
        "kind": "sweep",
        "job_name": "bench",
        "table_name": "bench",
        "key_attributes": ["id"],
        "ttl_attribute": "ttl",
        "workers": case["workers"],
        "unindexed_check_items": case.get("unindexed_check_items", 0),
    }
    if case["variant"] == "index":
        settings |= {
            "expiry_index_name": "expiry-index",
            "expiry_index_shards": SHARDS,
            "expiry_shard_attribute": "expiry_shard",
        }
    summary = run_job(parse_job(settings), sweep_work(lambda _: dynamodb), None, lambda: NOW, io.StringIO())
    deleted: int = summary["counts"]["items_deleted"]
    return deleted


def stream_cascade(dynamodb: Any, case: dict[str, Any]) -> int:
    """What a Lambda on the TTL stream does per record: one call (the S3 cascade's delete; here a
    DeleteItem of the same round trip), ``workers`` at a time, in batches of STREAM_BATCH records."""
    from fake_dynamodb import expired_ids

    ids = expired_ids(case["items"], case["expired"])
    with ThreadPoolExecutor(case["workers"]) as pool:
        for start in range(0, len(ids), STREAM_BATCH):
            calls = [{"TableName": "bench", "Key": {"id": {"S": i}}} for i in ids[start : start + STREAM_BATCH]]
            list(pool.map(lambda kwargs: dynamodb.delete_item(**kwargs), calls))
    return len(ids)


VARIANTS: dict[str, Callable[[Any, dict[str, Any]], int]] = {
    "loop": naive_loop,
    "scan": expiry_sweep,
    "index": expiry_sweep,
    "stream": stream_cascade,
}


def child(case: dict[str, Any]) -> None:
    """Run one case with the client a Lambda would have, and print its timings as JSON."""
    sys.path.insert(0, str(HERE))
    import boto3

    from expiry.runtime.aws_clients import client
    from expiry.runtime.jobs.cpu import pin_to_one_cpu

    if case["variant"] != "loop":
        pin_to_one_cpu()  # as Expiry's handlers do at cold start (a naive loop does not)
        import expiry.runtime.handlers.work  # noqa: F401 - a warm function has imported its handler (about 40 ms)
    dynamodb = boto3.client("dynamodb") if case["variant"] == "loop" else client("dynamodb", case["workers"])
    dynamodb.describe_table(TableName="bench")  # a warm function: connection and credentials ready
    started, cpu_started = time.perf_counter(), time.process_time()
    deleted = VARIANTS[case["variant"]](dynamodb, case)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"deleted": deleted, "seconds": seconds, "cpu_seconds": cpu}))


# The measurement --------------------------------------------------------------------------------------

LABELS = {
    "loop": "naive loop",
    "scan": "Expiry, Scan",
    "index": "Expiry, expiry index",
    "stream": "TTL + stream cascade",
}


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def throughput(
    url: str, quotas: CpuQuota, items: int, expired: int, rtt_ms: int, cases: list[dict[str, Any]], repeat: int
) -> None:
    """A table of ``cases``, each the median by rate of ``repeat`` runs."""
    table = {"items": items, "expired": expired, "size": 63, "rtt_ms": rtt_ms}
    rows = []
    loop_rate = None
    for case in cases:
        before = load()
        runs = sorted((run_case(url, quotas, case, table) for _ in range(repeat)), key=lambda r: r["seconds"])
        r = runs[len(runs) // 2]
        calls = sum(r["calls"].values()) - 1  # not the warm-up DescribeTable
        rate = r["deleted"] / r["seconds"]
        if case["variant"] == "loop" and loop_rate is None:
            loop_rate = rate
        rows.append((case, r, rate, calls, before))
    print(f"\n{items:,} items of 63 bytes, {expired:,} expired, {rtt_ms} ms RTT, median of {repeat} runs\n")
    print(
        "| variant | memory MB | CPU share | workers | deletions/s | x loop | seconds | CPU ms per call "
        "| GB-s per 1,000 deletions | load before |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for case, r, rate, calls, before in rows:
        gbs = case["memory_mb"] / 1024 * r["seconds"] * 1000 / max(r["deleted"], 1)
        workers = case.get("workers", 1) if case["variant"] != "loop" else 1
        print(
            f"| {LABELS[case['variant']]} | {case['memory_mb']:,} | {cpu_share(case['memory_mb']):.3f} | {workers} "
            f"| {rate:,.0f} | {rate / (loop_rate or rate):.1f} | {r['seconds']:.1f} "
            f"| {r['cpu_seconds'] * 1000 / max(calls, 1):.2f} | {gbs:.3f} | {before.split()[-3]} |"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--expired-share", type=float, default=0.01)
    parser.add_argument("--rtt-ms", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--memory-mb", type=int, nargs="+", default=[256, 512, 1024, 1769])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--variants", nargs="+", default=["index", "scan"], choices=["index", "scan"])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (the median is shown)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    expired = int(args.items * args.expired_share)
    quotas = CpuQuota()
    print(f"CPU quota: {quotas.kind}, period {PERIOD_US // 1000} ms; {os.cpu_count()} CPUs; {load()} at start")
    try:
        with fake_endpoint() as url:
            for rtt in args.rtt_ms:
                cases = [{"variant": "loop", "memory_mb": 256}]
                cases += [
                    {"variant": v, "memory_mb": m, "workers": w}
                    for v in args.variants
                    for m in args.memory_mb
                    for w in args.workers
                ]
                throughput(url, quotas, args.items, expired, rtt, cases, args.repeat)
    finally:
        quotas.close()
    print(f"\n{load()} at the end")


if __name__ == "__main__":
    main()
