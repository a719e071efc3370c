from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from jobs.engine import pinning as device_config
from jobs.worker import GpuWorker

DEFAULT_ENGINE = "jobs.engine.vllm_engine.VllmEngine"
log = logging.getLogger("batchsite.worker")


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
        parser.add_argument(
            "--device",
            help="The engine's device: cuda:N (one GPU, as nvidia-smi -L numbers them), cpu, or auto "
            "(the default: whatever vLLM finds)",
        )
        parser.add_argument(
            "--devices",
            metavar="0,1",
            help="Several GPUs for one engine, for models registered with tensor_parallel_size "
            "(x pipeline_parallel_size) equal to their number",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="Serve vLLM's own engine metrics (Prometheus) on this port",
        )
        parser.add_argument("--metrics-host", default="127.0.0.1", help="Address for --metrics-port (0.0.0.0: all)")
        parser.add_argument("--engine", default=DEFAULT_ENGINE, help="Engine class (dotted path); the default is vLLM")
        parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("batchsite").setLevel(options["log_level"])
        # First of all: CUDA reads CUDA_VISIBLE_DEVICES once, when it starts in this process.
        try:
            devices = device_config.parse(options["device"], options["devices"])
            pinned = device_config.pin(devices)
            if options["engine"] == DEFAULT_ENGINE:
                device_config.check_platform(devices)
        except device_config.DeviceError as exc:
            raise CommandError(str(exc)) from None
        if pinned:
            log.info("engine pinned to %s (%s)", devices.label, " ".join(f"{k}={v!r}" for k, v in pinned.items()))
        engine = import_string(options["engine"])()
        port = options["metrics_port"]
        if port is not None:
            self.serve_engine_metrics(engine, port, options["metrics_host"])
        worker = GpuWorker(
            engine,
            worker_id=options["worker_id"],
            devices=devices,
            exit_when_idle=options["exit_when_idle"],
            heartbeat_seconds=options["heartbeat_seconds"],
            stale_after=options["stale_after"],
        )
        worker.run()

    def serve_engine_metrics(self, engine: Any, port: int, host: str) -> None:
        """vLLM records its metrics in prometheus_client's default registry of this process when
        its stats are on; this serves that registry, as ``vllm serve`` does on its /metrics."""
        from prometheus_client import start_http_server

        if not 1 <= port <= 65535:
            raise CommandError(f"--metrics-port: {port} is not a port (1-65535)")
        if not hasattr(engine, "log_stats"):
            raise CommandError("--metrics-port: this engine keeps no engine metrics")
        engine.log_stats = True
        try:
            start_http_server(port, addr=host)
        except OSError as exc:
            raise CommandError(f"--metrics-port: cannot listen on {host}:{port} ({exc})") from None
        log.info("engine metrics on http://%s:%d/metrics", host, port)
