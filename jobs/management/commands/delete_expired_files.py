"""Delete the files whose expires_at has passed (row and bytes), except inputs of unfinished batches.

    python manage.py delete_expired_files

One sweep, then exit: workers and bin/start run it periodically.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from jobs.services.retention import delete_expired_files


class Command(BaseCommand):
    help = "Delete expired files (row and bytes), except the inputs of batches that have not finished."

    def handle(self, *args: Any, **opts: Any) -> None:
        deleted = delete_expired_files()
        self.stdout.write(f"Deleted {deleted} expired file{'s' if deleted != 1 else ''}.")
