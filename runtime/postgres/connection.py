"""Connections to a cleanup's database or pg_cron's (Connector), with credentials read once from Secrets
Manager for a job."""

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from expiry.runtime.jobs.config import JobConfigError, Postgres


@dataclass(frozen=True)
class Connector:
    """Opens connections to the table's database or to pg_cron's, with the same credentials."""

    conninfo: str
    database: str

    def connect(self, database: str | None = None, autocommit: bool = True) -> psycopg.Connection:
        other = database if database and database != self.database else None  # None: the conninfo's database
        return psycopg.connect(self.conninfo, autocommit=autocommit, connect_timeout=15, dbname=other)


def credentials(secrets: Any, settings: Postgres) -> tuple[str, str]:
    """(user, password) from the secret: an RDS-style JSON object, or the password alone."""
    text = secrets.get_secret_value(SecretId=settings.secret_arn)["SecretString"]
    try:
        secret = json.loads(text)
    except json.JSONDecodeError:
        secret = {"password": text}
    if not isinstance(secret, dict):
        secret = {"password": text}
    user = settings.user or secret.get("username")
    if not user or "password" not in secret:
        raise JobConfigError(
            "EXPIRY_JOB: postgres.secret_arn: the secret needs a password (and a username unless postgres.user is set)"
        )
    return user, secret["password"]


def connector(secrets: Any, settings: Postgres) -> Connector:
    """Connections to the job's database (or pg_cron's), with the secret's credentials, read once."""
    user, password = credentials(secrets, settings)
    conninfo = make_conninfo(
        "",
        host=settings.host,
        port=settings.port,
        dbname=settings.database,
        user=user,
        password=password,
        application_name="expiry",
    )
    return Connector(conninfo, settings.database)
