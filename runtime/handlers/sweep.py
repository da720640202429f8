"""Lambda entry point: the sweep job configured in EXPIRY_JOB (checked at cold start)."""

from expiry.runtime.handlers.work import entry_point
from expiry.runtime.jobs.config import KIND_SWEEP

handler = entry_point(KIND_SWEEP)
