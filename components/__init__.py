"""Reusable Pulumi components: TtlTable, ScheduledSweeper, PgCronCleanup, CleanupAlarms (see expiry)."""
