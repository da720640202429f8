"""Lambda entry point: the pg monitor job configured in EXPIRY_JOB (needs the psycopg layer)."""

from runtime.job_config import KIND_PG_MONITOR
from runtime.jobs import entry_point

handler = entry_point(KIND_PG_MONITOR)
