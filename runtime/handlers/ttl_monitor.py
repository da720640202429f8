"""Lambda entry point: the ttl monitor job configured in EXPIRY_JOB (checked at cold start)."""

from runtime.job_config import KIND_TTL_MONITOR
from runtime.jobs import entry_point

handler = entry_point(KIND_TTL_MONITOR)
