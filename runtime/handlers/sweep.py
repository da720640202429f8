"""Lambda entry point: the sweep job configured in EXPIRY_JOB (checked at cold start)."""

from runtime.job_config import KIND_SWEEP
from runtime.jobs import entry_point

handler = entry_point(KIND_SWEEP)
