"""Periodic jobs that keep the service moving when nobody is looking: webhooks, retention, expiry, stranded finalizes.

A ``Housekeeper`` runs a list of ``Job``s, each at its own interval, in one
thread. It runs in every worker process (a daemon thread, started by
``jobs.worker``) and in ``manage.py run_housekeeper`` (which ``bin/start``
runs beside gunicorn and the worker), so the jobs go on whether or not a GPU
worker is up. Every job must therefore be safe to run in many processes at
once: a guarded UPDATE or a lease, never "I am the only one".

To add a periodic job, add one line to ``standard_jobs``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.utils import InterfaceError, OperationalError

from jobs.services import expiry, retention, stranded
from jobs.webhooks.sender import Sender

log = logging.getLogger("batchsite.housekeeper")


@dataclass(frozen=True)
class Job:
    name: str
    every_seconds: float
    run: Callable[[], object]


def standard_jobs(owner: str, stopping: threading.Event) -> list[Job]:
    """Every periodic job. ``owner`` names this process in leases; long jobs stop early once ``stopping`` is set."""
    return [
        Job("send webhooks", settings.BATCHSITE_WEBHOOKS.poll_seconds, Sender(owner, stopping).send_due),
        # Overdue batches end even when no GPU worker runs (each is finalized under its row lock).
        Job("expire overdue batches", 5.0, expiry.expire_overdue),
        # Finalizes nobody is doing (failed outside a worker, handed over by the API, or left by
        # a dead worker) are taken with the same guarded claim as a worker's: never done twice.
        Job("finish stranded batches", 5.0, stranded.finish_stranded),
        # Deleting is idempotent (a row or file another process deleted first is no error).
        Job("delete expired files", 60.0, retention.delete_expired_files),
    ]


class Housekeeper:
    def __init__(self, owner: str, jobs: list[Job] | None = None) -> None:
        self.owner = owner
        self.stopping = threading.Event()
        self.jobs = jobs if jobs is not None else standard_jobs(owner, self.stopping)
        self._thread: threading.Thread | None = None

    def run_job(self, job: Job) -> None:
        """One run of one job; an error is logged, never raised, so the others go on."""
        try:
            close_old_connections()
            job.run()
        except (OperationalError, InterfaceError) as exc:
            log.warning("%s: database unavailable (%s); trying again later", job.name, exc)
            connection.close()
        except Exception:
            log.exception("%s failed; trying again later", job.name)

    def run_once(self) -> None:
        for job in self.jobs:
            if self.stopping.is_set():
                return
            self.run_job(job)

    def run_forever(self) -> None:
        """Each job at once, then every ``every_seconds`` after its last run ended, until ``stop``."""
        next_run = {job.name: 0.0 for job in self.jobs}
        try:
            while not self.stopping.is_set():
                for job in self.jobs:
                    if time.monotonic() >= next_run[job.name] and not self.stopping.is_set():
                        self.run_job(job)
                        next_run[job.name] = time.monotonic() + job.every_seconds
                if next_run:
                    self.stopping.wait(max(0.0, min(next_run.values()) - time.monotonic()))
                else:
                    self.stopping.wait()
        finally:
            connection.close()

    def start(self) -> threading.Thread:
        """Run in a daemon thread (its own database connection); ``stop`` ends it."""
        self._thread = threading.Thread(target=self.run_forever, name=f"housekeeper-{self.owner}", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
