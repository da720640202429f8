"""Fan-out benchmark: deletions per second and cost per 1,000,000 expired items against the number of
parallel children of a fan-out sweep (ScheduledSweeper's ``fan_out``: a distributed Map invoking the
sweep handler once per expiry-index shard with the payload ``{"shards": [k]}``).

Measured: real children (the sweep handler, ``entry_point("sweep")``, each invoked with its shard's
payload as the state machine invokes it) in subprocesses, each under its own CPU quota of the memory's
share of one vCPU and on its own CPU (a Lambda instance each), against ``fake_dynamodb.py`` (a table,
its expiry index and the breaker's ledger; the RTT slept, not computed). ``--measure`` children run
together (the Map's MaxConcurrency: each slot runs its shards one after the other, as a warm
function). From these runs come the figures that load distorts far less than wall
time: client CPU per call (``time.process_time``) and the calls of each kind per deletion and per
child (the endpoint's counts). One more measured run scales an index partition key's capacity down
(``--throttle-check-wcu``) so that the fake's throttling binds two children on this machine.

Modelled, for every child count: a child's time is the larger of its CPU time at its share of one vCPU
and its round trips (its fixed calls one after the other, its per-item calls ``workers`` at a time, the
rate limiter's ledger writes one at a time under its lock, 25 tokens each), and at least its shard's
index writes at one partition key's 1,000 WCU/s; the fan-out's rate is the children's (one per shard,
``MaxConcurrency`` at a time), capped by the rate limit (``breaker.max_deletes_per_second``) and the
table's write throughput (the 40,000 WRU/s quota, and a new table's 4,000). Lambda's concurrency binds
only past 1,000 children. The measured runs are printed next to the model's figure for the same table
with the CPU share the children obtained, so that the model can be judged where the machine can run
real children (1, 2). Prints Markdown tables. Figures, not a test.

    venv/bin/python benchmarks/fan_out_benchmark.py [--items 200000] [--expired-share 0.05] [--shards 32]
        [--rtt-ms 10] [--model-rtt-ms 10 50] [--rate-limits 0 2000] [--measure 1 2]
        [--children 1 2 4 8 16 32] [--throttle-check-wcu 100]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from sweep_benchmark import CpuQuota, admin, cpu_share, fake_endpoint, load  # noqa: E402
from sweep_cost_model import PRICES  # noqa: E402

PER = 1_000_000
LEDGER = "ledger"
# Step Functions STANDARD, us-east-1: $0.025 per 1,000 state transitions (AWS Step Functions pricing page,
# https://aws.amazon.com/step-functions/pricing/; an assumption: the stored copies searched from here do
# not show it). Distributed Map: "one state transition for each child workflow execution" it starts
# (Step Functions Developer Guide, "Transitions"), plus the child's own states (one Task here; a retry
# of a throttled invoke adds one each).
STATE_TRANSITION = 0.025 / 1000
PARENT_TRANSITIONS = 3  # Shards (Pass), Sweep shards (Map), Summary (Pass)
CHILD_TRANSITIONS = 2  # the child execution's start, its Sweep shard task
# AWS's default limits (us-east-1): DynamoDB on demand, "Quotas in Amazon DynamoDB" (per table 40,000
# write request units) and the Knowledge Center's "on-demand table throttling" (a new on-demand table
# takes 4,000 WRU/s at once; a partition 1,000 WCU/s). Lambda's account concurrency (1,000 by default)
# binds only past 1,000 children, more than ``fan_out.max_concurrency`` allows.
TABLE_WRU = 40_000
NEW_TABLE_WRU = 4_000
PARTITION_WCU = 1_000
LAMBDA_SECONDS = 900  # a child that needs longer stops at its deadline; the next run continues


def job_settings(shards: int, workers: int, rate_limit: int) -> dict[str, Any]:
    """The fan-out job as its component configures it: an expiry index, the breaker's ledger."""
    breaker = {"max_deletes_per_second": rate_limit} if rate_limit else {}
    return {
        "kind": "sweep",
        "job_name": "bench",
        "table_name": "bench",
        "key_attributes": ["id"],
        "ttl_attribute": "ttl",
        "workers": workers,
        "unindexed_check_items": 0,  # the check's Scan (per child) is left out: see the notes
        "expiry_index_name": "expiry-index",
        "expiry_index_shards": shards,
        "expiry_shard_attribute": "expiry_shard",
        "budget_table_name": LEDGER,
        "breaker": breaker,
    }


# A slot: one warm function running its shards' invocations in turn ---------------------------------


def slot(spec: dict[str, Any]) -> None:
    """Invoke the sweep handler once per shard of ``spec`` from ``spec["start_at"]``; print timings as JSON."""
    os.environ["EXPIRY_JOB"] = json.dumps(spec["job"])
    from expiry.runtime.aws_clients import client
    from expiry.runtime.handlers.work import entry_point

    handler = entry_point("sweep")  # cold start: reads EXPIRY_JOB, keeps the process on its CPU
    client("dynamodb", spec["job"]["workers"], 15.0).describe_table(TableName="bench")  # a warm function
    time.sleep(max(0.0, spec["start_at"] - time.time()))
    runs = []
    for shard in spec["shards"]:
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = handler({"shards": [shard], "source": "expiry-schedule", "job": "bench"}, None)
        runs.append(
            {
                "shard": shard,
                "seconds": time.perf_counter() - started,
                "cpu_seconds": time.process_time() - cpu_started,
                "deleted": summary["counts"].get("items_deleted", 0),
                "errors": summary["counts"].get("errors", 0),
            }
        )
    print(json.dumps({"runs": runs, "ended": time.time()}))


def measure(
    url: str, quotas: CpuQuota, args: argparse.Namespace, children: int, rate_limit: int, throttle: dict[str, Any]
) -> dict[str, Any]:
    """``children`` slots sweeping every shard of a fresh table together; their runs and the endpoint's counts."""
    expired = int(args.items * args.expired_share)
    # The handler's clock is the real one: the table's items expire an hour before now, or a day after.
    table = {"items": args.items, "expired": expired, "now": int(time.time()), "size": 63, "shards": args.shards}
    admin(url, "Reset", {**table, "rtt_ms": args.rtt_ms, "throttle": throttle})
    job = job_settings(args.shards, args.workers, rate_limit)
    start_at = time.time() + 5  # imports and cold starts of every slot first
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(args.memory_mb),
    }
    cpus = sorted(os.sched_getaffinity(0))
    procs = []
    for n in range(children):
        group = quotas.group(cpu_share(args.memory_mb), slot=n)

        def enter(group: Path | None = group, cpu: int = cpus[n % len(cpus)]) -> None:
            os.sched_setaffinity(0, {cpu})  # its own CPU, as each Lambda instance has
            if group is not None:
                (group / "cgroup.procs").write_text(str(os.getpid()))

        spec = {"job": job, "shards": list(range(n, args.shards, children)), "start_at": start_at}
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--slot", json.dumps(spec)],
                env=env,
                preexec_fn=enter,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a child failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    runs = [r for result in results for r in result["runs"]]
    return {
        "children": children,
        "runs": runs,
        "seconds": max(r["ended"] for r in results) - start_at,
        "expired": expired,
        **admin(url, "Stats", {}),
    }


# The model -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Child:
    """What one child costs, from measured runs: client CPU per call, calls per deletion and per child."""

    cpu_per_call: float
    fixed_calls: float  # per child, one after the other (DescribeTable, Query pages, ledger, check Scan)
    item_calls: float  # per deletion, ``workers`` at a time (DeleteItem, and GetItem where the index lacks)
    rate_calls: float  # per deletion, the rate limiter's ledger writes (one at a time, under its lock)
    budget_writes: float  # per child: the ledger's reservations (conditional UpdateItem, retries included)
    reads: float  # read units per deletion (Query pages, GetItem)
    fixed_reads: float  # read units per child (the ledger's GetItem, the unindexed check's Scan)
    writes: float  # table and index write units per deletion
    index_wcu: float  # index write units per deletion (all of a shard's on one partition key)


def child_model(run: dict[str, Any]) -> Child:
    """A child's figures from a measured run (its slots' warm-up DescribeTable left out)."""
    calls, units = run["calls"], run["units"]
    deleted = max(1, sum(r["deleted"] for r in run["runs"]))
    invocations = len(run["runs"])
    total_calls = sum(calls.values()) - run["children"]
    rate_writes = units.get("ledger_rate_write", 0.0)
    item_calls = calls.get("DeleteItem", 0) + calls.get("GetItem", 0)
    return Child(
        cpu_per_call=sum(r["cpu_seconds"] for r in run["runs"]) / max(1, total_calls),
        fixed_calls=(total_calls - item_calls - rate_writes) / invocations,
        item_calls=item_calls / deleted,
        rate_calls=rate_writes / deleted,
        budget_writes=units.get("ledger_budget_write", 0.0) / invocations,
        reads=units.get("read", 0.0) / deleted,
        fixed_reads=units.get("ledger_read", 0.0) / invocations,
        writes=(units.get("write", 0.0) + units.get("index_write", 0.0)) / deleted,
        index_wcu=units.get("index_write", 0.0) / deleted,
    )


@dataclass(frozen=True)
class Scenario:
    """The fan-out run modelled: items, shards, children, and the limits around it."""

    expired: int
    shards: int
    children: int
    rtt: float
    workers: int
    share: float
    rate_limit: int  # 0: none
    table_wru: float
    index_key_wcu: float = PARTITION_WCU


def fan_out(child: Child, s: Scenario) -> dict[str, Any]:
    """The modelled fan-out: each limit's deletions per second, the binding one, the run's seconds."""
    n = s.expired / s.shards  # per child
    cpu = child.cpu_per_call * (child.fixed_calls + n * (child.item_calls + child.rate_calls)) / s.share
    deletes = n * child.item_calls / s.workers  # round trips of the item calls, ``workers`` at a time
    if child.rate_calls:
        deletes = max(deletes, n * child.rate_calls)  # the limiter's writes, one at a time
    trips = s.rtt * (child.fixed_calls + deletes)
    running = min(s.children, s.shards)  # the Map's MaxConcurrency (and the function's reserved concurrency)
    limits = {
        "child CPU (one vCPU)" if cpu >= trips else "child round trips": running * n / max(cpu, trips),
        "index partition key (a shard's writes)": running * s.index_key_wcu / child.index_wcu,
        "table write throughput": s.table_wru / (child.writes - child.index_wcu),
    }
    if s.rate_limit:
        limits["rate limit"] = s.rate_limit
    bound = min(limits, key=lambda k: limits[k])
    rate = limits[bound]
    alone = max(cpu, trips, n * child.index_wcu / s.index_key_wcu)
    child_seconds = max(alone, running * n / rate)  # a capped child waits (throttled or rate-limited)
    return {
        "per_child": n / alone,
        "rate": rate,
        "bound": bound,
        "seconds": s.expired / rate,
        "child_seconds": child_seconds,
    }


def cost(child: Child, s: Scenario, modelled: dict[str, Any], memory_mb: int) -> dict[str, float]:
    """Dollars per 1,000,000 expired items: Lambda, DynamoDB writes, the ledger's writes, reads, Step Functions."""
    executions = max(1, math.ceil(modelled["child_seconds"] / LAMBDA_SECONDS))  # runs the backlog needs
    invocations = s.shards * executions
    per = PER / s.expired
    budget_writes = invocations * child.budget_writes
    # Children held by the rate limit each lose about one conditional write a second to the full second.
    waiting = s.children * modelled["seconds"] if modelled["bound"] == "rate limit" else 0.0
    return {
        "lambda": per
        * (
            s.shards * modelled["child_seconds"] * memory_mb / 1024 * PRICES["gb_second"]
            + invocations * PRICES["request"]
        ),
        "writes": PER * child.writes * PRICES["write_unit"],
        "ledger": per * (budget_writes + s.expired * child.rate_calls + waiting) * PRICES["write_unit"],
        "reads": per * (s.expired * child.reads + invocations * child.fixed_reads) * PRICES["read_unit"],
        "states": per * executions * (PARENT_TRANSITIONS + s.shards * CHILD_TRANSITIONS) * STATE_TRANSITION,
    }


# Output -------------------------------------------------------------------------------------------------


def print_measured(measured: list[dict[str, Any]], child: Child, args: argparse.Namespace, rate_limit: int) -> None:
    print(
        "\n| children together | throttle | deletions | seconds | deletions/s measured | model | measured / model "
        "| CPU share obtained | CPU ms per call | calls | throttled calls | ledger writes (failed) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in measured:
        deleted = sum(r["deleted"] for r in run["runs"])
        throttle = run["throttle"]
        scenario = Scenario(
            expired=deleted,
            shards=args.shards,
            children=run["children"],
            rtt=args.rtt_ms / 1000,
            workers=args.workers,
            share=cpu_share(args.memory_mb),
            rate_limit=rate_limit,
            table_wru=throttle.get("table_wru") or TABLE_WRU,
            index_key_wcu=throttle.get("index_key_wcu") or PARTITION_WCU,
        )
        modelled = fan_out(child, scenario)
        rate = deleted / run["seconds"]
        calls = sum(run["calls"].values())
        cpu = sum(r["cpu_seconds"] for r in run["runs"])
        units = run["units"]
        ledger = units.get("ledger_budget_write", 0) + units.get("ledger_rate_write", 0)
        failed = units.get("ledger_budget_write_failed", 0) + units.get("ledger_rate_write_failed", 0)
        label = f"index key {throttle['index_key_wcu']:,} WCU/s" if throttle else "AWS's"
        print(
            f"| {run['children']} | {label} | {deleted:,} | {run['seconds']:.1f} | {rate:,.0f} "
            f"| {modelled['rate']:,.0f} | {rate / modelled['rate']:.2f} | {cpu / run['children'] / run['seconds']:.2f} "
            f"| {cpu * 1000 / max(1, calls):.2f} | {calls:,} "
            f"| {int(units.get('throttled', 0)):,} | {int(ledger):,} ({int(failed):,}) |"
        )
    print(
        f"\nA CPU share obtained below the quota's ({cpu_share(args.memory_mb):.3f}) means other work on the machine "
        "(or the fake endpoint) took the children's CPU: the measured rate is then low by about that ratio."
    )


def print_model(child: Child, args: argparse.Namespace, rate_limit: int, table_wru: float, rtt_ms: int) -> None:
    print(
        f"\nModel: {PER:,} expired items over {args.shards} shards, {rtt_ms} ms RTT, {args.memory_mb:,} MB "
        f"({cpu_share(args.memory_mb):.3f} vCPU), {args.workers} workers, rate limit "
        f"{f'{rate_limit:,}/s' if rate_limit else 'none'}, table write throughput {table_wru:,.0f} WRU/s\n"
    )
    print(
        "| children | per child deletions/s | deletions/s | bound by | seconds | child seconds "
        "| Lambda $ | writes $ | ledger $ | reads $ | Step Functions $ | total $ per 1M |"
    )
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for children in args.children:
        s = Scenario(
            expired=PER,
            shards=args.shards,
            children=children,
            rtt=rtt_ms / 1000,
            workers=args.workers,
            share=cpu_share(args.memory_mb),
            rate_limit=rate_limit,
            table_wru=table_wru,
        )
        m = fan_out(child, s)
        c = cost(child, s, m, args.memory_mb)
        print(
            f"| {children} | {m['per_child']:,.0f} | {m['rate']:,.0f} | {m['bound']} | {m['seconds']:,.0f} "
            f"| {m['child_seconds']:,.0f} | {c['lambda']:.3f} | {c['writes']:.3f} | {c['ledger']:.4f} "
            f"| {c['reads']:.3f} | {c['states']:.4f} | {sum(c.values()):.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--expired-share", type=float, default=0.05)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--rtt-ms", type=int, default=10, help="the fake's RTT in the measured runs")
    parser.add_argument("--model-rtt-ms", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--memory-mb", type=int, default=1769)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--rate-limits", type=int, nargs="+", default=[0, 2000], help="0: no rate limit")
    parser.add_argument("--measure", type=int, nargs="+", default=[1, 2], help="children run for real")
    parser.add_argument("--children", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument(
        "--throttle-check-wcu", type=int, default=100, help="a measured run with this index-key WCU (0: none)"
    )
    parser.add_argument("--slot", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.slot:
        slot(json.loads(args.slot))
        return
    quotas = CpuQuota()
    print(f"CPU quota: {quotas.kind}, one per child; {os.cpu_count()} CPUs; {load()} at start")
    print(
        f"Measured table: {args.items:,} items of 63 bytes, {args.expired_share:.0%} expired, {args.shards} shards; "
        f"{args.rtt_ms} ms RTT; {args.memory_mb:,} MB, {args.workers} workers a child"
    )
    try:
        with fake_endpoint() as url:
            for rate_limit in args.rate_limits:
                print(f"\n### Rate limit: {f'{rate_limit:,} deletions/s' if rate_limit else 'none'}")
                measured = []
                for children in args.measure:
                    run = measure(url, quotas, args, children, rate_limit, {})
                    measured.append({**run, "throttle": {}})
                child = child_model(measured[0])
                if args.throttle_check_wcu and not rate_limit:
                    throttle = {"index_key_wcu": args.throttle_check_wcu}
                    run = measure(url, quotas, args, max(args.measure), rate_limit, throttle)
                    measured.append({**run, "throttle": throttle})
                print_measured(measured, child, args, rate_limit)
                print(
                    f"\nFrom the first run: {child.cpu_per_call * 1000:.2f} ms of client CPU per call; per deletion "
                    f"{child.item_calls:.2f} item calls, {child.rate_calls:.3f} rate-limit ledger writes, "
                    f"{child.reads:.2f} read units, {child.writes:.2f} write units; per child "
                    f"{child.fixed_calls:.1f} calls in sequence, {child.budget_writes:.2f} budget reservations, "
                    f"{child.fixed_reads:.2f} read units"
                )
                for rtt_ms in args.model_rtt_ms:  # CPU per call and calls per deletion do not depend on the RTT
                    print_model(child, args, rate_limit, TABLE_WRU, rtt_ms)
                print_model(child, args, rate_limit, NEW_TABLE_WRU, args.model_rtt_ms[0])
    finally:
        quotas.close()
    print(f"\n{load()} at the end")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
