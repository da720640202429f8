"""A PostgreSQL cleanup's settings (PurgeSpec), checked on construction, and the names and markers they give
what provisioning creates. Imports no psycopg: components and the stack validate settings on machines and in
Lambdas without it. psycopg.sql is imported only by the members that compose a name into SQL."""

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from expiry.runtime.jobs import fields

if TYPE_CHECKING:
    from psycopg import sql

DEFAULT_SCHEMA = "expiry"
DEFAULT_BATCH_SIZE = 5000
DEFAULT_TARGET_BATCH_MS = 50
DEFAULT_MAX_BATCH_SIZE = 200_000
MIN_BATCH_SIZE = 10
MAX_GROWTH = 4  # a batch is at most this many times the size of the one before
DEFAULT_ARCHIVE_DAYS = 30
MODE_DELETE = "delete"
MODE_DROP_PARTITIONS = "drop-partitions"
MODES = (MODE_DELETE, MODE_DROP_PARTITIONS)
DEFAULT_MAX_RUNTIME_SECONDS = 300
DEFAULT_HISTORY_DAYS = 7
DEFAULT_HISTORY_SCHEDULE = "17 * * * *"
DEFAULT_BREAKER_MAX_SHARE = 0.5
DEFAULT_BREAKER_IGNORE_BELOW = 10
CREATED_BY = "created by expiry; dropped with the last cleanup in it"
OWNED = "expiry:owned job="  # the marker of what a cleanup created: its comment, a pg_cron command's first comment
MAX_JOB_NAME = 48  # leaves room for suffixes within PostgreSQL's 63-byte identifiers
CRON_PART = re.compile(r"^(?:(\*)|(\d+)(?:-(\d+))?)(?:/(\d+))?$")
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
CRON_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
EXPRESSION_FIELD = "expiry_expression"  # a job's settings show it as purge.expiry_expression
MAX_EXPRESSION = 1000
# Refused anywhere in an expiry expression: statement ends, comments, backslash escapes (E'' strings
# could hide a quote from the scan below) and dollar quoting or parameters.
EXPRESSION_BANNED = (";", "--", "/*", "*/", "\\", "$", "\x00")
# Words refused outside quotes: a subquery (SELECT, VALUES, TABLE) and the SQL clock values, which
# are no function call (the server's dependency check cannot see them).
EXPRESSION_WORDS = frozenset(
    {"select", "values", "table", "current_timestamp", "current_date", "current_time", "localtime", "localtimestamp"}
)
EXPRESSION_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_]*|[()]|['"]|.""", re.S)


class CleanupError(ValueError):
    """A cleanup that cannot be provisioned or run as asked; the message says why."""


def owned_marker(job_name: str) -> str:
    """The marker of what provisioning created for ``job_name``: the comment on each object and the
    comment leading each pg_cron command. The name is percent-encoded, so it never ends a comment."""
    return OWNED + quote(job_name, safe="")


def cron_command(job_name: str, command: str) -> str:
    """A pg_cron job's command as provisioning schedules it: led by the job's marker."""
    return f"/* {owned_marker(job_name)} */ {command}"


def check_cron(schedule: str, field: str = "schedule") -> str:
    """Check a 5-field cron expression as pg_cron 1.4 parses it (numbers, no names, no seconds, GMT):
    a step follows only ``*`` or a range and is at least 1 (``*/0`` and ``0/5`` are refused there too);
    a range that runs backwards (never matches) is refused here as well."""
    if not isinstance(schedule, str):
        raise CleanupError(f"{field}: must be a 5-field cron expression, got {schedule!r}")
    parts = schedule.split()
    if len(parts) != 5:
        raise CleanupError(
            f"{field}: pg_cron needs 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)} in {schedule!r}"
        )
    for part, (low, high), name in zip(parts, CRON_RANGES, CRON_NAMES, strict=True):
        for item in part.split(","):
            match = CRON_PART.match(item)
            if match is None:
                raise CleanupError(
                    f"{field}: cron {name} field {part!r}: {item!r} is not a number, a range or *, "
                    "with an optional /step after * or a range"
                )
            star, first, last, step = match.groups()
            if step is not None and star is None and last is None:
                raise CleanupError(f"{field}: cron {name} field {part!r}: a /step needs * or a range before it")
            if step is not None and int(step) == 0:
                raise CleanupError(f"{field}: cron {name} field {part!r}: the step must be at least 1")
            for number in (first, last):
                if number is not None and not low <= int(number) <= high:
                    raise CleanupError(f"{field}: cron {name} field {part!r}: {number} is outside {low}..{high}")
            if last is not None and int(first) > int(last):
                raise CleanupError(f"{field}: cron {name} field {part!r}: the range {item} runs backwards")
    return schedule


def check_expression_text(expression: object) -> str:
    """The first half of checking an expiry expression, without a connection (PurgeSpec runs it on
    construction; catalog.check_expiry_expression runs it again, then the server's checks, before any
    statement built from the expression is run or provisioned): a string of at most MAX_EXPRESSION
    characters, none of EXPRESSION_BANNED, quotes closed, parentheses balanced and never closing one
    opened before the expression, no subquery or clock word. Spliced as ``(<text>)`` the text is then one
    parenthesised expression inside the statement: it cannot end the statement, comment out the rest
    or close the parenthesis around it."""
    field = EXPRESSION_FIELD
    if not isinstance(expression, str) or not expression.strip():
        raise CleanupError(f"{field}: must be a non-empty SQL expression, got {expression!r}")
    if len(expression) > MAX_EXPRESSION:
        raise CleanupError(f"{field}: at most {MAX_EXPRESSION} characters, got {len(expression)}")
    for banned in EXPRESSION_BANNED:
        if banned in expression:
            raise CleanupError(
                f"{field}: {banned!r} is not allowed in an expiry expression (one expression, no statements, "
                f"comments, escapes or dollar quotes), got {expression!r}"
            )
    depth = 0
    for token in EXPRESSION_TOKEN.findall(expression):
        if token in ("'", '"'):
            raise CleanupError(f"{field}: a quote is not closed in {expression!r}")
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth < 0:
            raise CleanupError(f"{field}: a ')' closes more than it opened in {expression!r}")
        if token.lower() in EXPRESSION_WORDS:
            what = "a subquery" if token.lower() in ("select", "values", "table") else "the current time"
            raise CleanupError(
                f"{field}: {token} ({what}) is not allowed: the expression gives each row's expiry from its "
                f"own columns; got {expression!r}"
            )
    if depth:
        raise CleanupError(f"{field}: a '(' is not closed in {expression!r}")
    return expression


def _checked(name: str, check: Callable[..., Any], value: Any, *limits: Any) -> None:
    """``check`` (runtime.jobs.fields) of one setting, its refusal as a CleanupError naming ``name``."""
    try:
        check(value, *limits)
    except fields.FieldError as error:
        raise CleanupError(f"{name}: {error}") from None


@dataclass(frozen=True)
class PurgeSpec:
    """What to purge and how; validated on construction. The expiry is ``expiry_column`` or, instead,
    ``expiry_expression`` (a row expires when it is before now). ``paused``: provisioning leaves its pg_cron
    jobs inactive (pg_cron does not run them) until it is false again."""

    job_name: str
    table: str
    expiry_column: str | None = None
    table_schema: str = "public"
    schema: str = DEFAULT_SCHEMA
    batch_size: int = DEFAULT_BATCH_SIZE
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_SECONDS
    schedule: str = "0 3 * * *"
    history_days: int = DEFAULT_HISTORY_DAYS
    history_schedule: str = DEFAULT_HISTORY_SCHEDULE
    extra_column: str | None = None
    extra_value: str | int | None = None
    create_index: bool = False
    breaker_max_share: float = DEFAULT_BREAKER_MAX_SHARE
    breaker_max_count: int | None = None
    breaker_ignore_below: int = DEFAULT_BREAKER_IGNORE_BELOW
    allow_mass_deletion: bool = False
    target_batch_ms: int = DEFAULT_TARGET_BATCH_MS
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    archive: bool = False
    archive_days: int = DEFAULT_ARCHIVE_DAYS
    mode: str = MODE_DELETE
    run_as: str | None = None
    expiry_expression: str | None = None
    paused: bool = False

    def __post_init__(self) -> None:
        if (self.expiry_column is None) == (self.expiry_expression is None):
            raise CleanupError(
                f"expiry_column: give expiry_column or {EXPRESSION_FIELD} (one of them), got "
                f"{self.expiry_column!r} and {self.expiry_expression!r}"
            )
        if self.expiry_expression is not None:
            check_expression_text(self.expiry_expression)
            if self.mode == MODE_DROP_PARTITIONS:
                raise CleanupError(f"{EXPRESSION_FIELD}: not with mode drop-partitions (partitions bound a column)")
            if self.create_index:
                raise CleanupError(f"{EXPRESSION_FIELD}: not with create_index (it indexes expiry_column)")
        names = ("job_name", "table", "table_schema", "schema")
        for name in names if self.expiry_column is None else (*names, "expiry_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "\x00" in value or len(value.encode()) > 63:
                raise CleanupError(f"{name}: must be a name of 1..63 bytes without NUL, got {value!r}")
        if len(self.job_name.encode()) > MAX_JOB_NAME:
            raise CleanupError(f"job_name: at most {MAX_JOB_NAME} bytes (suffixes must fit 63), got {self.job_name!r}")
        for name, low, high in (
            ("batch_size", 1, 1_000_000),
            ("max_runtime_seconds", 1, 86_400),
            ("history_days", 1, 3650),
            ("breaker_ignore_below", 0, 1_000_000_000),
            ("target_batch_ms", 0, 60_000),
            ("max_batch_size", 1, 1_000_000),
            ("archive_days", 1, 3650),
        ):
            _checked(name, fields.integer, getattr(self, name), low, high)
        share = self.breaker_max_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise CleanupError(f"breaker_max_share: must be a number in 0..1 (a share of the rows), got {share!r}")
        count = self.breaker_max_count
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise CleanupError(f"breaker_max_count: must be a whole number of rows (0 or more) or unset, got {count!r}")
        for name in ("allow_mass_deletion", "archive", "paused"):
            _checked(name, fields.boolean, getattr(self, name))
        if self.max_batch_size < self.batch_size:
            raise CleanupError(
                f"max_batch_size: must be at least batch_size ({self.batch_size}), got {self.max_batch_size}"
            )
        _checked("mode", fields.one_of, self.mode, MODES)
        if self.mode == MODE_DROP_PARTITIONS and self.extra_column is not None:
            raise CleanupError("extra_column: not with mode drop-partitions (a dropped partition takes all its rows)")
        if self.mode == MODE_DROP_PARTITIONS and self.archive:
            raise CleanupError("archive: only with mode delete (partitions are dropped, not read)")
        check_cron(self.schedule)
        check_cron(self.history_schedule, "history_schedule")
        if (self.extra_column is None) != (self.extra_value is None):
            raise CleanupError("extra_column: extra_column and extra_value go together")
        if self.extra_column is not None and (not self.extra_column or "\x00" in self.extra_column):
            raise CleanupError(f"extra_column: must be a column name, got {self.extra_column!r}")
        role = self.run_as
        if role is not None and (not isinstance(role, str) or not role or "\x00" in role or len(role.encode()) > 63):
            raise CleanupError(f"run_as: must be a role name of 1..63 bytes without NUL, or unset, got {role!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "PurgeSpec":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CleanupError(f"unknown settings {unknown}; allowed: {sorted(known)}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # Names of what the cleanup creates, all inside its own schema.
    def ident(self, suffix: str = "") -> "sql.Identifier":
        from psycopg import sql

        return sql.Identifier(self.schema, self.job_name + suffix)

    @property
    def expiry(self) -> "sql.Composable":
        """The row's expiry in SQL: the column, or the expression in parentheses. The expression's text is
        spliced as SQL: check_expression_text (run on construction) keeps it one parenthesised expression,
        and catalog.check_expiry_expression has the server parse, type and vet it before a run or
        provisioning uses it."""
        from psycopg import sql

        if self.expiry_expression is not None:
            return sql.SQL("({})").format(sql.SQL(self.expiry_expression))  # checked: see above
        return sql.Identifier(self.column)

    @property
    def column(self) -> str:
        """The expiry column (only for what needs one: partitions, the index)."""
        if self.expiry_column is None:
            raise CleanupError(f"{EXPRESSION_FIELD}: this needs expiry_column, not an expression")
        return self.expiry_column

    @property
    def expiry_label(self) -> str:
        return self.expiry_column if self.expiry_column is not None else f"({self.expiry_expression})"

    @property
    def target(self) -> "sql.Identifier":
        from psycopg import sql

        return sql.Identifier(self.table_schema, self.table)

    @property
    def history_job(self) -> str:
        return f"{self.job_name}-history"

    @property
    def index_name(self) -> str:
        return f"{self.job_name}_expiry_idx"

    @property
    def lock_key(self) -> "sql.Composed":
        """The advisory lock every run of this cleanup takes (pg_cron's and a client's alike)."""
        from psycopg import sql

        return sql.SQL("hashtextextended({}, 0)").format(sql.Literal(f"expiry:{self.schema}.{self.job_name}"))

    @property
    def command(self) -> "sql.Composed":
        from psycopg import sql

        return sql.SQL("CALL {}()").format(self.ident())


# The modules whose SQL provisioning leaves in the database (procedure, views, tables, grants, markers).
PROVISIONING_SOURCES = (
    "procedure.py",
    "provision.py",
    "statements.py",
    "ownership.py",
    "grants.py",
    "catalog.py",
    "spec.py",
)


def provisioning_code() -> str:
    """A digest of the code that writes SQL into the database. Components pass it as an input of what
    provisions, so a new version of that code is an update of every deployed cleanup: without it, a
    database provisioned by an older Expiry would keep the older procedure until its settings change."""
    digest = hashlib.sha256()
    for name in PROVISIONING_SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:16]
