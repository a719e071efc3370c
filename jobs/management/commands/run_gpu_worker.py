from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils.module_loading import import_string

from jobs.worker import GpuWorker


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
