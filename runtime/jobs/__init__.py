"""The job contract and runner: settings, metrics, deadlines, the breaker (no AWS or PostgreSQL calls)."""
