"""Lambda entry point: the pg monitor job configured in EXPIRY_JOB (needs the psycopg layer)."""

import os
from typing import Any

from runtime.job_config import KIND_PG_MONITOR, job_from_environment
from runtime.job_runner import run_job
from runtime.jobs import work_for

JOB = job_from_environment(os.environ)
WORK = work_for(JOB, KIND_PG_MONITOR)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return run_job(JOB, WORK, context)
