"""Shared fixtures: Pulumi mocks that record registrations."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pulumi
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from aws import Aws, MotoServer, aws_backend  # noqa: E402
from postgres import PostgresServer  # noqa: E402
from pulumi_harness import Harness, RecordingMocks, RecordingMonitor  # noqa: E402

# Property tests (tests/test_adversarial_*.py): the function-scoped fixtures they meet only set
# environment variables, which hold across examples; examples run against moto_server, so no deadline.
# Under CI every run replays the same examples (derandomize); HYPOTHESIS_PROFILE picks a profile by name.
settings.register_profile(
    "dev",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=DirectoryBasedExampleDatabase(ROOT / ".pytest_cache" / "hypothesis"),
)
settings.register_profile("ci", settings.get_profile("dev"), derandomize=True, database=None, print_blob=True)
# Hunting for new failures: skip the recorded @example cases (a failing one would end the search).
settings.register_profile("explore", settings.get_profile("dev"), phases=[p for p in Phase if p != Phase.explicit])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


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


@pytest.fixture(autouse=True, scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Lambda archives and layers of the tests go to a temporary directory, not the user's cache."""
    path = tmp_path_factory.mktemp("expiry-build")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EXPIRY_BUILD_DIR", str(path))
        yield path


@pytest.fixture(autouse=True)
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a real AWS account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(params=["in-process", "moto_server"])
def aws(request: pytest.FixtureRequest, fake_aws_credentials: None) -> Iterator[Aws]:
    """moto in-process and moto_server over HTTP: each AWS test runs against both."""
    server = request.getfixturevalue("moto_server") if request.param == "moto_server" else None
    with aws_backend(request.param, server) as backend:
        yield backend


@pytest.fixture
def aws_in_process(fake_aws_credentials: None) -> Iterator[Aws]:
    """moto in-process only, for tests that inject faults into a client."""
    with aws_backend("in-process", None) as backend:
        yield backend


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 with pg_cron preloaded (cron.database_name = postgres)."""
    server = PostgresServer(with_pg_cron=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_without_cron() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 without pg_cron in shared_preload_libraries."""
    server = PostgresServer(with_pg_cron=False)
    yield server
    server.stop()
