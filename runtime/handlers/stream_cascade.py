"""Lambda entry point: the TTL-stream cascade configured in EXPIRY_JOB (checked at cold start)."""

from expiry.runtime.handlers.work import stream_entry_point

handler = stream_entry_point()
