"""Lambda entry point: the pg monitor job configured in EXPIRY_JOB (needs the psycopg layer)."""

from expiry.runtime.handlers.work import entry_point
from expiry.runtime.jobs.config import KIND_PG_MONITOR

handler = entry_point(KIND_PG_MONITOR)
