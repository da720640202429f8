"""What every job shares: its clock, its deadline, its counters and its one summary line."""

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol, TextIO

Clock = Callable[[], float]


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class Deadline:
    """Says when a run must stop taking new work: ``margin`` seconds before Lambda's time is up.
    ``planning_over`` comes halfway there, so that a run that plans first keeps time to act."""

    def __init__(self, context: LambdaContext | None, margin_seconds: float) -> None:
        self.context, self.margin_ms = context, margin_seconds * 1000
        self.start_ms = context.get_remaining_time_in_millis() if context else 0

    def __call__(self) -> bool:
        return self.reached()

    def reached(self) -> bool:
        if self.context is None:
            return False
        return self.context.get_remaining_time_in_millis() <= self.margin_ms

    def planning_over(self) -> bool:
        if self.context is None:
            return False
        halfway = self.margin_ms + (self.start_ms - self.margin_ms) / 2
        return self.context.get_remaining_time_in_millis() <= halfway


class Tally:
    """Thread-safe counters of a run, plus the errors it logged."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.stream = stream
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[name] += amount

    def error(self, action: str, error: BaseException, **where: Any) -> None:
        """Count an error and log one JSON line for it; the run goes on."""
        self.add("errors")
        log_line(
            {"level": "ERROR", "event": "cleanup_error", "action": action, "error": repr(error), **where}, self.stream
        )


def log_line(fields: dict[str, Any], stream: TextIO | None = None) -> None:
    """One structured JSON log line."""
    print(json.dumps(fields, default=str, sort_keys=False), file=stream or sys.stdout, flush=True)


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
