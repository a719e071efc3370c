from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from django.utils.module_loading import import_string

from jobs.worker import GpuWorker


def skew_clock_for_tests() -> None:
    """Fault injection for the clock-skew test: this worker's host clock runs
    BATCHSITE_TEST_CLOCK_OFFSET_SECONDS off (as Django sees it). Off unless set."""
    offset = float(os.environ.get("BATCHSITE_TEST_CLOCK_OFFSET_SECONDS", "0"))
    if offset:
        real_now = timezone.now
        timezone.now = lambda: real_now() + timedelta(seconds=offset)
        logging.getLogger("batchsite.worker").warning("test hook: this worker's clock is %+.0fs off", offset)


class Command(BaseCommand):
    help = "Run a GPU worker: claim chunks from the queue and run them on vLLM until stopped (SIGTERM)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--exit-when-idle", action="store_true", help="Drain the queue, then exit 0")
        parser.add_argument("--worker-id", help="Unique id for this process (default: generated)")
        parser.add_argument("--heartbeat-seconds", type=float, help="Default: BATCHSITE_HEARTBEAT_SECONDS")
        parser.add_argument(
            "--stale-after",
            type=float,
            metavar="SECONDS",
            help="Take back chunks of workers silent this long (default: BATCHSITE_STALE_AFTER_SECONDS)",
        )
        parser.add_argument("--device", default="", help="Informational, shown in the admin (e.g. cuda:0)")
        parser.add_argument(
            "--engine",
            default="jobs.engine.vllm_engine.VllmEngine",
            help="Engine class (dotted path); the default is vLLM",
        )
        parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("batchsite").setLevel(options["log_level"])
        skew_clock_for_tests()
        engine = import_string(options["engine"])()
        worker = GpuWorker(
            engine,
            worker_id=options["worker_id"],
            device=options["device"],
            exit_when_idle=options["exit_when_idle"],
            heartbeat_seconds=options["heartbeat_seconds"],
            stale_after=options["stale_after"],
        )
        worker.run()
