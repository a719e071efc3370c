from __future__ import annotations

import logging
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

DEFAULT_ENGINE = "jobs.engine.vllm_engine.VllmEngine"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


def positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not (0 < value <= 1_000_000):  # NaN fails this too
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


class Command(BaseCommand):
    help = (
        "Run the worker fleet on a Ray cluster: one worker per free GPU on every node (--cpu: per CPU slot), "
        "restarted by Ray, drained on SIGTERM/SIGINT. Needs requirements-ray.txt (bin/setup --ray)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--address", help="The Ray cluster (host:port or ray://...); default: RAY_ADDRESS or auto")
        parser.add_argument("--max-workers", type=positive(int), metavar="N", help="At most N workers (default: all)")
        parser.add_argument("--cpu", action="store_true", help="CPU workers (num_cpus each) instead of one per GPU")
        parser.add_argument(
            "--cpus-per-worker", type=positive(float), default=1.0, metavar="N", help="With --cpu (default 1)"
        )
        parser.add_argument(
            "--autoscale",
            action="store_true",
            help="Ask Ray's autoscaler for workers in proportion to the queue (bounded by --max-workers) and "
            "give them back when it is empty",
        )
        parser.add_argument(
            "--chunks-per-worker", type=positive(int), default=2, metavar="N", help="With --autoscale (default 2)"
        )
        parser.add_argument(
            "--idle-seconds",
            type=float,
            default=60.0,
            metavar="S",
            help="With --autoscale: drain workers the queue has not wanted for this long (default 60)",
        )
        parser.add_argument("--engine", default=DEFAULT_ENGINE, help="Engine class (dotted path); the default is vLLM")
        parser.add_argument("--poll-seconds", type=positive(float), default=5.0, help="How often the fleet looks")
        parser.add_argument("--name", default="", help="Prefix of actor names and worker ids (default: fleet-RANDOM)")
        parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("batchsite").setLevel(options["log_level"])
        try:
            import ray  # noqa: F401

            from jobs.fleet.ray_fleet import Fleet
        except ImportError:
            raise CommandError(
                "Ray is not installed: pip install -r requirements-ray.txt (or bin/setup --ray)"
            ) from None
        if not 0 <= options["idle_seconds"] <= 86400:
            raise CommandError("--idle-seconds must be between 0 and 86400")
        if options["name"] and not NAME.fullmatch(options["name"]):
            # It prefixes Ray actor names and worker ids (64 characters at most).
            raise CommandError("--name: 1 to 32 letters, digits, '-' or '_', starting with a letter or digit")
        fleet = Fleet(
            address=options["address"],
            max_workers=options["max_workers"],
            cpu=options["cpu"],
            cpus_per_worker=options["cpus_per_worker"],
            autoscale=options["autoscale"],
            chunks_per_worker=options["chunks_per_worker"],
            idle_seconds=options["idle_seconds"],
            engine=options["engine"],
            poll_seconds=options["poll_seconds"],
            name=options["name"],
        )
        fleet.run()  # until SIGTERM/SIGINT, which drain the fleet
