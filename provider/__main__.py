"""Entry point of the expiry plugin: serves TtlTable, ScheduledSweeper, PgCronCleanup and CleanupAlarms
to other Pulumi languages (see expiry.components.provider_host)."""

from expiry.components.provider_host import serve

if __name__ == "__main__":
    serve()
