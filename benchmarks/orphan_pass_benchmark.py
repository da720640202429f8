"""Orphan pass benchmark: requests, time and cost of finding the orphan candidates of a bucket of
``--objects`` objects from its S3 Inventory report against listing it with ListObjectsV2.

Each side runs the runtime's own code in a subprocess under the CPU quota of the sweep function's
memory (its share of one vCPU), on one CPU, against ``fake_s3.py`` (the RTT slept, not computed):
listing, ``runtime/s3/objects.orphan_candidates`` (1,000 keys a page); the report,
``runtime/s3/inventory.latest_manifest`` then ``inventory.orphan_candidates`` (gzip CSV data files of
``--rows-per-file`` rows: S3 decides the real split). Measured: the requests and bytes of each side
(the endpoint's counts) and its client CPU seconds (``time.process_time``), which load on the machine
distorts far less than wall time. Modelled: seconds = requests one after the other x RTT + bytes / bandwidth + CPU
seconds / CPU share, printed for several RTTs and memory sizes (the Lambda $ is of the modelled
seconds at the measured RTT); the measured wall time is shown for reference.

Owner checks (DynamoDB reads) follow the candidates, the same on both sides: per candidate one item
of a consistent BatchGetItem of owner ids (100 a call; 1 read unit each, found or not); per candidate
whose owner is gone, one Query on the owner index (0.5 read unit) and one GetObjectTagging (the keep
mark; S3 GET-class). Prints Markdown tables. Figures, not a test.

    venv/bin/python benchmarks/orphan_pass_benchmark.py [--objects 1000000] [--rows-per-file 100000]
        [--rtt-ms 20] [--model-rtt-ms 10 20 50] [--orphan-share 0.01]
"""

import argparse
import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from fake_s3 import DESTINATION, INVENTORY_ID, INVENTORY_PREFIX, PREFIX, SOURCE  # noqa: E402
from sweep_benchmark import CpuQuota, cpu_share, free_port, load  # noqa: E402
from sweep_cost_model import PRICES  # noqa: E402

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC).timestamp()
# S3 us-east-1, S3 Standard (Amazon S3 pricing page, https://aws.amazon.com/s3/pricing/, "Requests &
# data retrievals" and "Management & insights"; an assumption: the stored copies searched from here do
# not show them): LIST $0.005 per 1,000 requests, GET (and HEAD, GetObjectTagging) $0.0004 per 1,000,
# S3 Inventory $0.0025 per million objects listed.
S3_PRICES = {"list": 0.005 / 1000, "get": 0.0004 / 1000, "inventory_object": 0.0025 / 1e6}
BATCH_GET = 100  # owner ids a BatchGetItem reads
OWNER_PATTERN = r"uploads/(?P<id>u\d{9})/object\.bin"


@contextmanager
def fake_s3() -> Iterator[str]:
    """A fake S3 in its own process (outside any quota); its URL."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "fake_s3.py"), "--port", str(port)])
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def bench(url: str, route: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/_bench/{route}", json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request) as reply:
        result: dict[str, Any] = json.loads(reply.read())
        return result


# One side, inside the limited subprocess ------------------------------------------------------------


def side(name: str) -> None:
    """Find every orphan candidate one way; print the count and the client's seconds as JSON."""
    import boto3
    from botocore.config import Config

    from expiry.runtime.aws_clients import client_config
    from expiry.runtime.jobs.config import OrphanedObjects
    from expiry.runtime.jobs.cpu import pin_to_one_cpu
    from expiry.runtime.jobs.run_control import Tally
    from expiry.runtime.s3 import inventory, objects

    pin_to_one_cpu()
    s3 = boto3.client("s3", config=client_config().merge(Config(s3={"addressing_style": "path"})))
    settings = OrphanedObjects(prefix=PREFIX, older_than_seconds=3600, id_pattern=re.compile(OWNER_PATTERN))
    tally = Tally()
    started, cpu_started = time.perf_counter(), time.process_time()
    if name == "listing":
        found = objects.orphan_candidates(s3, SOURCE, settings, NOW, tally, lambda _: False)
    else:
        manifest = inventory.latest_manifest(s3, DESTINATION, INVENTORY_PREFIX, SOURCE, INVENTORY_ID, NOW, 2 * 86400)
        assert manifest is not None, "the fake's report was not found"
        found = inventory.orphan_candidates(s3, manifest, settings, NOW, tally, lambda _: False, lambda: False)
    candidates = sum(1 for _ in found)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"candidates": candidates, "seconds": seconds, "cpu_seconds": cpu}))


def run_side(url: str, quotas: CpuQuota, name: str, memory_mb: int) -> dict[str, Any]:
    """One side in a subprocess under the memory's CPU share; its result and the requests it made."""
    group = quotas.group(cpu_share(memory_mb))

    def join() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
    }
    before = bench(url, "stats", {})
    done = subprocess.run(
        [sys.executable, __file__, "--side", name], env=env, preexec_fn=join, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"{name}: failed:\n{done.stderr[-3000:]}")
    after = bench(url, "stats", {})
    requests = {k: v - before["requests"].get(k, 0) for k, v in after["requests"].items()}
    sent = sum(after["bytes"].values()) - sum(before["bytes"].values())
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "requests": requests, "bytes": sent}


# The figures -----------------------------------------------------------------------------------------------


def modelled(run: dict[str, Any], rtt_ms: float, bandwidth_mb_s: float, share: float) -> float:
    """Seconds of one side: its requests one after the other, its bytes, its CPU at ``share`` of a vCPU."""
    requests = sum(run["requests"].values())
    return requests * rtt_ms / 1000 + run["bytes"] / 1e6 / bandwidth_mb_s + run["cpu_seconds"] / share


def owner_checks(candidates: int, orphan_share: float) -> dict[str, float]:
    """DynamoDB read units, calls and tagging GETs of the owner checks of ``candidates`` (both sides)."""
    orphans = candidates * orphan_share
    return {
        "calls": candidates / BATCH_GET + orphans,
        "read_units": candidates * 1.0 + orphans * 0.5,
        "tagging_gets": orphans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--rows-per-file", type=int, default=100_000)
    parser.add_argument("--rtt-ms", type=int, default=20, help="the fake's RTT in the measured runs")
    parser.add_argument("--model-rtt-ms", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--bandwidth-mb-s", type=float, default=100.0, help="S3 to Lambda (an assumption)")
    parser.add_argument("--memory-mb", type=int, default=1769)
    parser.add_argument("--orphan-share", type=float, default=0.01, help="candidates whose owner is gone")
    parser.add_argument("--side", choices=["listing", "inventory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args.side)
        return
    quotas = CpuQuota()
    share = cpu_share(args.memory_mb)
    print(f"CPU quota: {quotas.kind}; {os.cpu_count()} CPUs; {load()} at start")
    runs = {}
    try:
        with fake_s3() as url:
            made = bench(
                url, "reset", {"objects": args.objects, "rows_per_file": args.rows_per_file, "rtt_ms": args.rtt_ms}
            )
            for name in ("listing", "inventory"):
                runs[name] = run_side(url, quotas, name, args.memory_mb)
    finally:
        quotas.close()
    print(
        f"\n{args.objects:,} objects under {PREFIX}, all older than the grace, keys parsed by the owner rule; "
        f"the report: {made['files'] - 2} data files of up to {args.rows_per_file:,} rows; "
        f"{args.memory_mb:,} MB ({share:.3f} vCPU); measured at {args.rtt_ms} ms RTT\n"
    )
    print(
        "| side | candidates | LIST requests | GET requests | MB received | CPU s | measured s | modelled s "
        "| S3 requests $ | Inventory $ | Lambda $ | $ per pass |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    dollars = {}
    for name, r in runs.items():
        lists = r["requests"].get("ListObjectsV2", 0)
        gets = r["requests"].get("GetObject", 0) + r["requests"].get("HeadObject", 0)
        requests = lists * S3_PRICES["list"] + gets * S3_PRICES["get"]
        listed = args.objects * S3_PRICES["inventory_object"] if name == "inventory" else 0.0
        seconds = modelled(r, args.rtt_ms, args.bandwidth_mb_s, share)
        function = args.memory_mb / 1024 * seconds * PRICES["gb_second"]
        dollars[name] = requests + listed + function
        print(
            f"| {name} | {r['candidates']:,} | {lists:,} | {gets:,} | {r['bytes'] / 1e6:,.1f} | {r['cpu_seconds']:.1f} "
            f"| {r['seconds']:.1f} | {seconds:.1f} | {requests:.4f} | {listed:.4f} | {function:.4f} "
            f"| {dollars[name]:.4f} |"
        )
    model = f"requests in sequence x RTT + MB / {args.bandwidth_mb_s:g} MB/s + CPU s / CPU share"
    print(f"\nModelled seconds ({model}), by RTT and memory:\n")
    print("| RTT ms | memory MB | " + " | ".join(runs) + " |")
    print("|---:|---:|" + "---:|" * len(runs))
    for rtt in args.model_rtt_ms:
        for memory in sorted({args.memory_mb, 256}):
            cells = [f"{modelled(r, rtt, args.bandwidth_mb_s, cpu_share(memory)):,.1f}" for r in runs.values()]
            print(f"| {rtt} | {memory:,} | " + " | ".join(cells) + " |")
    candidates = runs["listing"]["candidates"]
    checks = owner_checks(candidates, args.orphan_share)
    check_dollars = checks["read_units"] * PRICES["read_unit"] + checks["tagging_gets"] * S3_PRICES["get"]
    print(
        f"\nOwner checks, the same on both sides ({args.orphan_share:.0%} of candidates ownerless): "
        f"{checks['calls']:,.0f} DynamoDB calls, {checks['read_units']:,.0f} read units "
        f"({checks['read_units'] / max(1, candidates):.3f} per candidate), {checks['tagging_gets']:,.0f} "
        f"GetObjectTagging; ${check_dollars:.4f} per pass. A pass in all: listing "
        f"${dollars['listing'] + check_dollars:.4f}, inventory ${dollars['inventory'] + check_dollars:.4f}."
    )
    print(f"\n{load()} at the end")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
