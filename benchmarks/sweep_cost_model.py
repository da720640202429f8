"""Cost per 1,000,000 expired items cleaned: the naive hourly loop, Expiry's Scan, Expiry's expiry
index and native TTL with a stream-triggered cascade, from counts measured against the fake endpoint.

The scenario: a table of ``--items`` items of which 1 % expire per day (the sweep benchmark's table
holds one day's worth). Each approach is run once with the items that expire between two of its runs;
the endpoint counts read and write units as DynamoDB bills them (Scans by the size of every item read,
filter or not) and the run's seconds under its memory's CPU share give Lambda GB-s. That run's cost
times the runs needed for 1,000,000 expired items is the figure. Only the expiry-index approach keeps
the index: its entry is written when the item is (1 unit, counted here, not measured), deleted with
it (1, measured) and moved by each renewal of the TTL (2). The stream cascade's Lambda makes one call
per record (the S3 cascade it exists for); the other approaches' S3 calls are not counted. Prints
Markdown tables. Figures, not a test.

    venv/bin/python benchmarks/sweep_cost_model.py [--memory-mb 1769] [--workers 64]
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_benchmark import STREAM_BATCH, CpuQuota, fake_endpoint, load, run_case

# us-east-1 on-demand list prices as of 2025 (DynamoDB since its on-demand price cut of 1 November 2024;
# Lambda arm64, ScheduledSweeper's default architecture, first pricing tier). Assumptions: AWS's own
# pricing pages were not reachable from here; see README, "Cost per 1,000,000 expired items".
PRICES = {
    "read_unit": 0.125 / 1e6,
    "write_unit": 0.625 / 1e6,
    "gb_second": 0.0000133334,
    "request": 0.20 / 1e6,
}
EXPIRING_PER_DAY = 0.01
PER = 1_000_000
ITEM_SIZES = (63, 400)
INDEX_PUT_WRITES, RENEWAL_INDEX_WRITES = 1, 2  # an indexed item's put writes the entry; a new TTL moves it


def approaches(memory_mb: int, workers: int) -> list[dict[str, Any]]:
    """Each approach: how often it runs (hours; 0 = per stream batch), its case and its memory."""
    return [
        {"name": "naive loop, hourly", "hours": 1, "case": {"variant": "loop", "memory_mb": 256}},
        {"name": "Expiry, Scan every 6 h", "hours": 6, "case": {"variant": "scan", "memory_mb": memory_mb}},
        {
            "name": "Expiry, expiry index every 6 h",
            "hours": 6,
            "case": {"variant": "index", "memory_mb": memory_mb, "unindexed_check_items": 10_000},
        },
        {"name": "TTL + stream cascade", "hours": 24, "case": {"variant": "stream", "memory_mb": 256}},
    ]


def costs(run: dict[str, Any], approach: dict[str, Any], expired: int, renewals: int = 0) -> dict[str, float]:
    """Dollars per 1,000,000 expired items, by kind, from one run that cleaned ``expired`` items."""
    runs = PER / expired
    units = run["units"]
    stream = approach["case"]["variant"] == "stream"
    writes = 0.0 if stream else units.get("write", 0)  # TTL deletes for free
    if approach["case"]["variant"] == "index":  # only this approach needs the index on its table
        writes += units.get("index_write", 0) + expired * (INDEX_PUT_WRITES + RENEWAL_INDEX_WRITES * renewals)
    invocations = runs * (expired / STREAM_BATCH if stream else 1)
    return {
        "reads": runs * (0.0 if stream else units.get("read", 0)) * PRICES["read_unit"],
        "writes": runs * writes * PRICES["write_unit"],
        "lambda": runs * approach["case"]["memory_mb"] / 1024 * run["seconds"] * PRICES["gb_second"]
        + invocations * PRICES["request"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rtt-ms", type=int, default=10)
    parser.add_argument("--memory-mb", type=int, default=1769, help="Expiry's sweeper memory")
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()
    quotas = CpuQuota()
    print(f"CPU quota: {quotas.kind}; {load()} at start; {args.items:,} items, {EXPIRING_PER_DAY:.0%} expiring a day")
    print(f"{args.rtt_ms} ms RTT; prices: {', '.join(f'{k} ${v:.3g}' for k, v in PRICES.items())}\n")
    results: list[tuple[str, int, dict[str, float], dict[str, Any], int]] = []
    read_units_per_item: dict[int, float] = {}
    try:
        with fake_endpoint() as url:
            for size in ITEM_SIZES:
                for approach in approaches(args.memory_mb, args.workers):
                    expired = round(args.items * EXPIRING_PER_DAY * approach["hours"] / 24)
                    table = {"items": args.items, "expired": expired, "size": size, "rtt_ms": args.rtt_ms}
                    case = {"workers": args.workers, **approach["case"]}
                    run = run_case(url, quotas, case, table)
                    if case["variant"] == "scan":
                        read_units_per_item[size] = run["units"]["read"] / args.items
                    for renewals in (0, 1) if case["variant"] == "index" else (0,):
                        name = approach["name"] + (", one renewal per item" if renewals else "")
                        results.append((name, size, costs(run, approach, expired, renewals), run, expired))
    finally:
        quotas.close()
    print("| approach | item bytes | items read per expired item | reads $ | writes $ | Lambda $ | total $ |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, size, dollars, run, expired in results:
        scanned = 0 if "stream" in name else run["units"].get("items_read", 0)
        print(
            f"| {name} | {size} | {scanned / expired:,.1f} | {dollars['reads']:.2f} | {dollars['writes']:.2f} "
            f"| {dollars['lambda']:.3f} | {sum(dollars.values()):.2f} |"
        )
    print(f"\n{load()} at the end")
    print("\nThe expiry index pays below this share of the table expiring per day (reads saved = index writes):\n")
    print("| item bytes | Scan every 6 h | Scan every 6 h, one renewal per item | Scan hourly |")
    print("|---:|---:|---:|---:|")
    for size, per_item in read_units_per_item.items():
        per_day = per_item * PRICES["read_unit"] * 24  # one Scan an hour, per item in the table
        index = (INDEX_PUT_WRITES + 1) * PRICES["write_unit"]  # the entry's put and its delete
        renewed = index + RENEWAL_INDEX_WRITES * PRICES["write_unit"]
        print(f"| {size} | {per_day / 6 / index:.2%} | {per_day / 6 / renewed:.2%} | {per_day / index:.2%} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
