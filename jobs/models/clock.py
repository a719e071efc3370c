"""The database's clock, for every time one process compares with another's.

Heartbeats, leases, retry times and expiry are written by one host and read
by another; with each host's own clock, a worker whose clock runs an hour
behind would look dead to the others (and one an hour ahead would take their
chunks). So they are written and compared with the database's ``NOW()``,
the one clock every process shares.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now

__all__ = ["Now", "ago", "db_now", "later"]


def db_now() -> datetime:
    """The database's now as a value, for Python code that compares times itself
    (the scheduler's waits and the queue plan), in one small query."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT STATEMENT_TIMESTAMP()")  # what Django's Now() uses there
            value = cursor.fetchone()[0]
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        # SQLite keeps UTC text, as Django's Now() writes it there.
        cursor.execute("SELECT STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')")
        return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)


def ago(seconds: float) -> ExpressionWrapper:
    """The database's now minus ``seconds``, for filters and updates."""
    return ExpressionWrapper(Now() - timedelta(seconds=seconds), output_field=DateTimeField())


def later(seconds: float) -> ExpressionWrapper:
    """The database's now plus ``seconds``."""
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())
