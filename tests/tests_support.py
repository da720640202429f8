"""Small helpers shared by the test fixtures."""

import socket
from typing import Any


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def emf_totals(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's EMF documents as CloudWatch sums them: the last line (the run's end), with the metrics
    each effect published as it happened added in."""
    *effects, last = [line for line in lines if "_aws" in line]
    totals = dict(last)
    for document in effects:
        for metric in (m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]):
            totals[metric] = totals.get(metric, 0) + document[metric]
    return totals
