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


# Counters of effects (things deleted, aborted, marked, archived): each effect's metrics are published
# as soon as it is counted, so a run that dies midway has already reported everything it did.
EFFECTS = frozenset(
    {
        "items_deleted",
        "items_marked",
        "objects_deleted",
        "uploads_aborted",
        "orphans_deleted",
        "objects_marked_kept",
        "items_archived",
    }
)


class Tally:
    """Thread-safe counters of a run, plus the errors it logged. ``on_effect`` is called after each
    effect is counted."""

    def __init__(self, stream: TextIO | None = None, on_effect: Callable[[], None] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.stream, self.on_effect = stream, on_effect
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[name] += amount
        if amount and name in EFFECTS and self.on_effect:
            self.on_effect()

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

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
