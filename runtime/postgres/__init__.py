"""PostgreSQL: batched purges, their pg_cron jobs, status, and connections from Secrets Manager."""
