"""Lambda entry point: the ttl monitor job configured in EXPIRY_JOB (checked at cold start)."""

from expiry.runtime.handlers.work import entry_point
from expiry.runtime.jobs.config import KIND_TTL_MONITOR

handler = entry_point(KIND_TTL_MONITOR)
