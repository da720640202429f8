"""Lambda entry point: the orphaned references job configured in EXPIRY_JOB (checked at cold start)."""

from expiry.runtime.handlers.work import entry_point
from expiry.runtime.jobs.config import KIND_ORPHANED_REFERENCES

handler = entry_point(KIND_ORPHANED_REFERENCES)
