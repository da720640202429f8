"""Pulumi components of Expiry: TtlTable, ScheduledSweeper, PgCronCleanup."""
