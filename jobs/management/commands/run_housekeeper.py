from __future__ import annotations

import logging
import os
import signal
import socket
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs.housekeeper import Housekeeper


class Command(BaseCommand):
    help = (
        "Run the periodic jobs (sending webhooks, ...) until stopped (SIGTERM/SIGINT). "
        "Every run_gpu_worker runs them too; this keeps them going without one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run each job once, then exit")
        parser.add_argument("--name", help="Name in leases and logs (default: housekeeper-HOST-PID)")
        parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("batchsite").setLevel(options["log_level"])
        name = options["name"] or f"housekeeper-{socket.gethostname()}-{os.getpid()}"
        keeper = Housekeeper(name)
        if options["once"]:
            keeper.run_once()
            return
        signal.signal(signal.SIGTERM, lambda *_: keeper.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: keeper.stopping.set())
        self.stderr.write(f"{name}: running {', '.join(job.name for job in keeper.jobs)}")
        keeper.run_forever()
