"""The chaos run: a whole batchsite under random SIGKILLs, then a check that nothing was lost.

PostgreSQL (a throwaway server, through bin/with-postgres, unless DATABASE_URL
already names one), S3 (moto's server, in this process), two web servers
(gunicorn as bin/start runs it), three workers on the SIMULATED engine
(jobs/engine/simulated.py: this is about the queue, the files and the
webhooks, not inference) and the housekeeper, each under bin/supervise.
Three users submit batches through the API with webhooks to a receiver here
that goes down for --receiver-down seconds at random times; every
~--kill-every seconds one random process (web, worker, housekeeper) gets
SIGKILL, for --duration seconds. Then the run waits for quiet and checks:
every batch terminal; every input line exactly once across output and error
files; request_counts equal to the files; every ended batch's webhook
delivered at least once (duplicates counted); /metrics counters never fell,
and count every line once; no process of the run left after shutdown.

  flock /tmp/batchsite-heavy.lock .venv/bin/python bench/chaos.py --duration 300 --kill-every 10 \\
      --batches 30 --lines 500 2000 --json /work/chaos-full.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import chaos_stack as stack  # noqa: E402
from bench.chaos_api import Api, submit_batch  # noqa: E402
from bench.chaos_report import failures, summary  # noqa: E402
from bench.chaos_watch import (  # noqa: E402
    TERMINAL,
    Receiver,
    Scraper,
    check_counts,
    check_lines,
    check_webhooks,
    summed,  # noqa: E402
)
from bench.common import PYTHON, REPO, free_port, fresh_database_url  # noqa: E402

USERS = ("alice", "bob", "carol")
KINDS = ["web", "worker", "housekeeper"]
WORKERS = 3
SIM_WINDOW = 8  # lines in flight per simulated engine
MODEL = "sim-chat"
METRICS_TOKEN = "chaos-metrics-" + secrets.token_hex(8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300, help="Seconds of kills (default 300)")
    parser.add_argument("--kill-every", type=float, default=10, help="Mean seconds between kills (default 10)")
    parser.add_argument("--batches", type=int, default=30, help="Batches in all, shared by three users")
    parser.add_argument("--lines", type=int, nargs=2, default=(500, 2000), metavar=("MIN", "MAX"))
    parser.add_argument("--receiver-down", type=float, default=30, help="Seconds of each receiver outage")
    parser.add_argument("--chunk-size", type=int, default=100, help="BATCHSITE_CHUNK_SIZE (small: many claims)")
    parser.add_argument("--quiet-timeout", type=float, default=600, help="Longest wait for quiet after the kills")
    parser.add_argument(
        "--sim-sleep",
        type=float,
        help="Seconds the simulated engine spends per line (default: so the work fills most of --duration, "
        "and the kills land on workers holding claims)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", help="Write the figures here")
    args = parser.parse_args(argv)
    if not 1 <= args.lines[0] <= args.lines[1] or args.batches < 1 or args.duration <= 0 or args.kill_every <= 0:
        parser.error("--lines MIN MAX with 1 <= MIN <= MAX; --batches, --duration, --kill-every above 0")
    return args


def sim_sleep(args: argparse.Namespace) -> float:
    """Per-line time of the simulated engine that keeps the three workers busy for about 70 % of the run."""
    if args.sim_sleep is not None:
        return float(args.sim_sleep)
    lines = args.batches * sum(args.lines) / 2
    return round(min(1.0, max(0.002, 0.7 * args.duration * WORKERS * SIM_WINDOW / lines)), 4)


def environment(
    token: str, data_dir: Path, database_url: str, storage: dict[str, str], args: argparse.Namespace
) -> dict[str, str]:
    return {
        **os.environ,
        **storage,
        stack.MARKER: token,
        "DATABASE_URL": database_url,
        "BATCHSITE_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "batchsite.settings",
        "HF_HUB_OFFLINE": "1",
        # One secret for every process (each would otherwise race to generate its own).
        "SECRET_KEY": secrets.token_urlsafe(48),
        "BATCHSITE_METRICS_TOKEN": METRICS_TOKEN,
        "BATCHSITE_CHUNK_SIZE": str(args.chunk_size),
        # Every batch is submitted early (so the work fills the run under the kills): room for all.
        "BATCHSITE_MAX_QUEUED_BATCHES": str(max(10, args.batches)),
        # The receiver is on loopback; retries soon enough to see them within the run.
        "BATCHSITE_WEBHOOK_ALLOW_PRIVATE": "1",
        "BATCHSITE_WEBHOOK_BACKOFF": "1s,2s,4s,8s",
        "BATCHSITE_WEBHOOK_TIMEOUT_SECONDS": "5",
        "BATCHSITE_WEBHOOK_POLL_SECONDS": "0.5",
        # A killed worker's claim goes back after a few seconds, not a minute; generous
        # enough that two busy cores do not make live workers look dead.
        "BATCHSITE_HEARTBEAT_SECONDS": "1",
        "BATCHSITE_STALE_AFTER_SECONDS": "8",
        "BATCHSITE_PROGRESS_SECONDS": "0.5",
        "BATCHSITE_POLL_SECONDS": "0.2",
        "SIM_SLEEP_SECONDS": str(sim_sleep(args)),
        "SIM_WINDOW": str(SIM_WINDOW),
    }


class Chaos:
    def __init__(self, args: argparse.Namespace, database_url: str, work: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = work
        self.token = secrets.token_hex(8)
        self.stopping = threading.Event()
        self.kills: list[dict[str, Any]] = []
        from tests.s3 import S3Server  # moto's server mode on loopback, the tests' object store

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request

        self.s3 = S3Server(free_port())
        data_dir = work / "data"
        data_dir.mkdir()
        self.env = environment(self.token, data_dir, database_url, self.s3.env(self.s3.new_prefix("chaos")), args)
        stack.manage(self.env, "migrate", "--noinput")
        stack.manage(self.env, "register_model", MODEL, "--source", "simulated", "--endpoints", "chat")
        self.keys = {user: stack.manage(self.env, "create_api_key", user).strip().splitlines()[-1] for user in USERS}
        hooks = {user: stack.manage(self.env, "webhook_secret", user).strip().splitlines()[-1] for user in USERS}
        self.receiver = Receiver(free_port(), hooks)
        ports = [free_port(), free_port()]
        self.urls = [f"http://127.0.0.1:{port}" for port in ports]
        logs = work / "logs"
        logs.mkdir()
        self.processes = [
            stack.Supervised("web", f"web-{i}", stack.web_cmd(port), self.env, logs / f"web-{i}.log")
            for i, port in enumerate(ports)
        ]
        self.processes += [
            stack.Supervised("worker", f"worker-{i}", stack.worker_cmd(), self.env, logs / f"worker-{i}.log")
            for i in range(WORKERS)
        ]
        self.processes.append(
            stack.Supervised("housekeeper", "housekeeper", stack.keeper_cmd(), self.env, logs / "hk.log")
        )
        self.apis = {user: Api(self.urls, key) for user, key in self.keys.items()}
        for url in self.urls:
            Api([url], METRICS_TOKEN).wait_up(120)
        self.scraper = Scraper(self.metrics)
        self.submitted: dict[str, list[str]] = {}  # input file id -> its custom_ids
        self.submit_errors: list[str] = []

    def metrics(self) -> str | None:
        return Api(self.urls, METRICS_TOKEN).text_once("/metrics")

    def user(self, name: str, sizes: list[int], until: float) -> None:
        """Submit this user's batches at random moments before ``until`` (all during the kills)."""
        api = self.apis[name]
        moments = sorted(self.rng.uniform(time.monotonic(), until) for _ in sizes)
        for k, (size, moment) in enumerate(zip(sizes, moments, strict=True)):
            if self.stopping.wait(max(0.0, moment - time.monotonic())):
                return
            ids = [f"{name}-{k}-{i}" for i in range(size)]
            hook = f"http://127.0.0.1:{self.receiver.port}/hook/{name}"
            try:
                file_id = submit_batch(api, ids, MODEL, hook)
            except Exception as exc:  # noqa: BLE001 (reported, and fails the run)
                self.submit_errors.append(f"{name} batch {k}: {exc}")
                continue
            self.submitted[file_id] = ids

    def killer(self) -> None:
        """A SIGKILL every ~--kill-every seconds. The kind (web, worker, housekeeper) goes round
        in a fresh random order each round, so even a short run kills each kind; the process
        of that kind is random."""
        kinds: list[str] = []
        while not self.stopping.wait(self.rng.uniform(0.5, 1.5) * self.args.kill_every):
            if not kinds:
                kinds = self.rng.sample(KINDS, len(KINDS))
            kind = kinds.pop()
            victim = self.rng.choice([p for p in self.processes if p.kind == kind])
            tree = victim.kill()
            if tree:
                self.kills.append({"kind": victim.kind, "name": victim.name, "pids": tree, "at": time.monotonic()})

    def outages(self, until: float) -> None:
        """One receiver outage per started two minutes of the run, each at a random moment."""
        count = max(1, int(self.args.duration // 120))
        moments = sorted(
            self.rng.uniform(0, max(1.0, self.args.duration - self.args.receiver_down)) for _ in range(count)
        )
        started = time.monotonic()
        for moment in moments:
            if self.stopping.wait(max(0.0, started + moment - time.monotonic())):
                return
            self.receiver.down(min(self.args.receiver_down, max(0.0, until - time.monotonic())), self.stopping)

    def run(self) -> dict[str, Any]:
        began = time.monotonic()
        until = began + self.args.duration
        low, high = self.args.lines
        sizes = [self.rng.randint(low, high) for _ in range(self.args.batches)]
        per_user = {user: sizes[i :: len(USERS)] for i, user in enumerate(USERS)}
        # Every batch is in within the first 30 % of the run; the work (see sim_sleep) then
        # keeps the workers busy under the kills until near its end.
        last_submit = began + 0.3 * self.args.duration
        threads = [threading.Thread(target=self.user, args=(u, s, last_submit)) for u, s in per_user.items()]
        threads += [threading.Thread(target=self.killer), threading.Thread(target=self.outages, args=(until,))]
        for thread in threads:
            thread.start()
        self.stopping.wait(self.args.duration)
        self.stopping.set()
        for thread in threads:
            thread.join()
        chaos_end = time.monotonic()
        quiet = self.wait_quiet(chaos_end + self.args.quiet_timeout)
        quiet_at = time.monotonic()
        report = self.check()
        report["database"] = database_figures(self.env["DATABASE_URL"])
        report["sim_sleep_seconds"] = float(self.env["SIM_SLEEP_SECONDS"])
        watch = self.scraper.stop()
        hung = stack.shutdown(self.processes)
        orphans = stack.marked(self.token, exclude={os.getpid()})
        self.receiver.stop()
        self.s3.stop()
        lines = sum(b["lines"] for b in report["batches"])
        counted = summed(watch.last, "batchsite_requests_total")
        kinds = {kind: sum(1 for k in self.kills if k["kind"] == kind) for kind in KINDS}
        report.update(
            {
                "quiet": quiet,
                "kills": kinds,
                "kills_total": len(self.kills),
                # Starts after an exit, by bin/supervise (a kill, or an exit nobody asked for).
                "restarts": {p.name: p.restarts() for p in self.processes},
                "lines": lines,
                "metrics": {
                    "scrapes": watch.scrapes,
                    "failed_scrapes": self.scraper.failed,
                    "falls": watch.falls,
                    "requests_total": counted,
                    # Lines a killed worker had finished but not checkpointed: run again, counted once.
                    "lines_rerun": summed(watch.last, "batchsite_lines_rerun_total"),
                },
                "receiver_outages_s": [round(b - a, 1) for a, b in self.receiver.outages],
                "bad_webhook_posts": len(self.receiver.bad),
                "submit_errors": self.submit_errors,
                "http": Api.stats(self.apis.values()),
                "shutdown_hung": hung,
                "orphans": orphans,
                "chaos_seconds": round(chaos_end - began, 1),
                "quiet_after_s": round(quiet_at - chaos_end, 1),
                "wall_seconds": round(time.monotonic() - began, 1),
            }
        )
        report["failures"] = failures(report, len(self.submitted))
        return report

    def batches(self) -> list[dict[str, Any]]:
        return [{**batch, "user": user} for user, api in self.apis.items() for batch in api.list_batches()]

    def wait_quiet(self, deadline: float) -> bool:
        """Until every batch has ended and every ended batch's webhook has arrived."""
        while time.monotonic() < deadline:
            batches = self.batches()
            ended = [b["id"] for b in batches if b["status"] in TERMINAL]
            if len(ended) == len(batches) and not check_webhooks(ended, self.receiver.snapshot())["missing"]:
                return True
            time.sleep(1)
        return False

    def check(self) -> dict[str, Any]:
        rows = []
        batches = self.batches()
        for batch in batches:
            owner = self.apis[batch["user"]]
            expected = self.submitted.get(batch["input_file_id"])
            if expected is None:  # created by a retried request whose answer was lost: read its input
                expected = owner.custom_ids(batch["input_file_id"])
            outputs, errors = (
                owner.custom_ids(batch.get("output_file_id")),
                owner.custom_ids(batch.get("error_file_id")),
            )
            lines = check_lines(expected, outputs, errors)
            counts = check_counts(batch["request_counts"], len(outputs), len(errors), len(expected))
            rows.append(
                {"id": batch["id"], "status": batch["status"], "lines": len(expected), **lines, "counts": counts}
            )
        ended = [b["id"] for b in batches if b["status"] in TERMINAL]
        return {"batches": rows, "webhooks": check_webhooks(ended, self.receiver.snapshot())}


def database_figures(database_url: str) -> dict[str, int]:
    """What the kills did inside, from the database: chunks a dead worker's claim was taken back
    from (claimed more than once), and webhook events that needed more than one POST."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        chunks, retaken = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE attempts > 1) FROM jobs_chunk"
        ).fetchone()
        events, retried = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE attempts > 1) FROM jobs_webhookdelivery"
        ).fetchone()
    return {
        "chunks": chunks,
        "chunks_claimed_again": retaken,
        "webhook_events": events,
        "webhook_events_retried": retried,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        # A throwaway PostgreSQL for this run: bin/with-postgres starts it, runs us, removes it.
        cmd = [str(REPO / "bin" / "with-postgres"), PYTHON, str(Path(__file__).resolve()), *argv]
        return subprocess.run(cmd, cwd=REPO, check=False).returncode
    database_url = fresh_database_url("chaos")
    assert database_url is not None
    work = Path(tempfile.mkdtemp(prefix="batchsite-chaos-"))
    command = "bench/chaos.py " + " ".join(argv)
    chaos = Chaos(args, database_url, work)
    try:
        report = chaos.run()
    finally:
        stack.shutdown(chaos.processes, timeout=30)
    report.update({"command": command, "args": vars(args), "work_dir": str(work)})
    print(summary(report, command))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
