"""Lambda entry point: the pg purge job configured in EXPIRY_JOB (needs the psycopg layer)."""

from runtime.job_config import KIND_PG_PURGE
from runtime.jobs import entry_point

handler = entry_point(KIND_PG_PURGE)
