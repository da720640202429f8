"""Lambda entry point: the orphaned references job configured in EXPIRY_JOB (checked at cold start)."""

from runtime.job_config import KIND_ORPHANED_REFERENCES
from runtime.jobs import entry_point

handler = entry_point(KIND_ORPHANED_REFERENCES)
