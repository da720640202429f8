"""Lambda entry point: the pg purge job configured in EXPIRY_JOB (needs the psycopg layer)."""

from expiry.runtime.handlers.work import entry_point
from expiry.runtime.jobs.config import KIND_PG_PURGE

handler = entry_point(KIND_PG_PURGE)
