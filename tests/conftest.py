"""Shared fixtures: Pulumi mocks that record registrations."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pulumi
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pulumi_harness import Harness, RecordingMocks, RecordingMonitor  # noqa: E402


@pytest.fixture
def pulumi_mocks() -> Iterator[Harness]:
    """Fresh Pulumi mocks for one test; the harness records what the program registers."""
    pulumi.runtime.set_all_config({})
    monitor = RecordingMonitor(RecordingMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="expiry", stack="test", preview=False, monitor=monitor)
    yield Harness(monitor)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail a run in which no test passed, and under CI a run with skips (CI must run all)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter else {}
    if exitstatus == 0 and not stats.get("passed"):
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
    if exitstatus == 0 and stats.get("skipped") and os.environ.get("CI"):
        print("\nCI runs every test: skipped tests are failures here")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
