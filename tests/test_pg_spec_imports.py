"""Validating a PostgreSQL cleanup's settings needs no psycopg: the spec module, the ScheduledSweeper that
checks a pg-purge job's settings and the stack settings that check cron schedules import without it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WITHOUT_PSYCOPG = ("expiry.runtime.postgres.spec", "expiry.components.scheduled_sweeper", "stack.settings")


def test_settings_are_checked_without_importing_psycopg():
    program = (
        "import importlib, sys\n"
        f"for name in {WITHOUT_PSYCOPG!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(module for module in sys.modules if module.split('.')[0] == 'psycopg'))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_spec_still_composes_its_sql():
    from expiry.runtime.postgres.spec import PurgeSpec

    spec = PurgeSpec(job_name="purge", table="sessions", expiry_column="expires_at")
    assert spec.command.as_string(None) == 'CALL "expiry"."purge"()'
