"""The seed's scenario: eight batches alternating two models on one worker, under fifo and affinity.

    .venv/bin/python bench/seed_scenario.py [--scale 0.25] [--requests 1000] [--chunk 100] [--json out.json]

SIMULATED ENGINE (jobs.engine.simulated): requests sleep and models "load" by
sleeping, at the seed's numbers scaled down in time by --scale: model A runs
18 req/s and loads in 35 s, model B 37 req/s and 28 s (at --scale 0.25: 72
and 148 req/s, 8.75 and 7 s). The models are registered with the seed's
numbers as priors (what an operator would write down), so ETAs exist from
submission, before anything is measured.

Each policy gets its own stack (database, gunicorn, one worker started idle);
the user submits the eight batches back to back through the openai SDK, and
the queue plan is read every --poll seconds while they run. Reported per
policy: total time (first submission to last completion), swaps, each batch's
wait (submission to first claim), and the ETA error at submission and after
the batch's first chunk: |predicted - actual completion| / (actual completion
- time of the prediction). Plans are read in this process with the server's
code (exact times; the API shows the same value in whole seconds).

    .venv/bin/python bench/seed_scenario.py --two-users [--b-model model-b] [--b-delay 40] [--markdown]

Two users (issue 18): user A submits the same eight batches, then user B (another
key) submits one --b-requests batch on --b-model, --b-delay seed seconds (scaled)
after A's last. Three columns, each on its own stack: fifo and affinity with
BATCHSITE_FAIR_SHARE=off, and fair share on with affinity inside each user's
work (bench/seed_two_users.py: the columns, tables and targets).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import seed_two_users  # noqa: E402
from bench.common import PYTHON, REPO, Stack, emit, fresh_database_url, table, write_jsonl  # noqa: E402
from bench.seed_two_users import SEED_MODELS, SecondUser, fair_share_env, fmt  # noqa: E402

ORDER = ("model-a", "model-b") * 4
POLICIES = ("fifo", "affinity")


def lines(model: str, n: int, sleep: float) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{model}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"item {i}"}], "sim_sleep": sleep},
        }
        for i in range(n)
    ]


def run_policy(
    policy: str,
    scale: float,
    requests: int,
    chunk: int,
    poll: float,
    fair_share: str | None = None,
    second: SecondUser | None = None,
    switch_seconds: float | None = None,
) -> dict[str, Any]:
    """One policy on its own stack; runs in a child process (Django is set up once per process).

    ``fair_share`` (on/off) sets BATCHSITE_FAIR_SHARE (unset: the default); ``second``
    adds user B's batch, submitted ``second.delay`` seconds after user A's last one."""
    fair_env = {} if fair_share is None else fair_share_env(fair_share, scale, switch_seconds)
    stack = Stack(
        database_url=fresh_database_url(f"seed_{policy}_{fair_share or 'default'}"),
        env={
            **fair_env,
            "BATCHSITE_SCHEDULER": policy,
            "BATCHSITE_CHUNK_SIZE": str(chunk),
            "BATCHSITE_QUEUE_PLAN_SECONDS": str(poll),
            "BATCHSITE_POLL_SECONDS": "0.05",
            "BATCHSITE_HEARTBEAT_SECONDS": "1",
            "BATCHSITE_PROGRESS_SECONDS": "1",
            # One user submits all 8 seed batches: past the default per-user quota (half the queue).
            "BATCHSITE_USER_MAX_QUEUED_BATCHES": str(len(ORDER)),
        },
    )
    log = stack.data_dir / "worker.log"
    try:
        for model, (rate, load) in SEED_MODELS.items():
            stack.manage(
                "register_model",
                model,
                "--source",
                "/simulated",
                "--endpoints",
                "chat",
                "--no-check",
                "--option",
                f"sim_load_seconds={load * scale}",
                "--expected-rps",
                str(rate / scale),
                "--expected-load-seconds",
                str(load * scale),
            )
        stack.start_web()
        sdk = stack.sdk(stack.api_key())
        # The plans read in this process must run the stack's fair-share rule (on or off, its
        # budget), which Django reads from this process's environment, not the stack's.
        os.environ.update(fair_env)
        models = stack.orm()
        import logging

        from django.utils import timezone

        logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per SDK call otherwise

        from jobs.services import scheduling

        stack.start_worker(
            "--engine", "jobs.engine.simulated.SimulatedEngine", "--worker-id", "w1", "--device", "cpu", log=log
        )
        deadline = time.monotonic() + 60
        while not models.Worker.objects.filter(pk="w1", state="idle", scheduler=policy).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.1)

        ids: list[str] = []
        at_submit: dict[str, tuple[Any, Any]] = {}
        api_at_submit: dict[str, Any] = {}

        def submit(client: Any, name: str, model: str, n: int) -> None:
            path = write_jsonl(stack.data_dir / f"{name}.jsonl", lines(model, n, scale / SEED_MODELS[model][0]))
            file = client.files.create(file=path.open("rb"), purpose="batch")
            batch = client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            ids.append(batch.id)
            api_at_submit[batch.id] = batch.model_extra["estimated_completion_time"]
            entry = scheduling.queue_plan(refresh=True).batches.get(batch.id)
            at_submit[batch.id] = (timezone.now(), entry.finishes_at if entry else None)

        # User B's key first: creating it (a manage.py run) must not hold up the plan reads.
        b_sdk = stack.sdk(stack.api_key("user-b")) if second else None
        for k, model in enumerate(ORDER):
            submit(sdk, f"b{k}", model, requests)

        polls: list[tuple[Any, dict[str, Any]]] = []
        expected_swaps = scheduling.queue_plan(refresh=True).expected_swaps
        # User B (another key holder) submits part-way in, while A's batches run.
        b_due = time.monotonic() + second.delay * scale if second else None
        b_loaded, expected_after_b = None, None
        while b_due is not None or models.Batch.objects.filter(pk__in=ids, completed_at__isnull=True).exists():
            if second and b_due is not None and time.monotonic() >= b_due:
                b_loaded = models.Worker.objects.get(pk="w1").loaded_model
                submit(b_sdk, "user-b", second.model, second.requests)
                expected_after_b = scheduling.queue_plan(refresh=True).expected_swaps
                b_due = None
            now = timezone.now()
            polls.append((now, {i: e.finishes_at for i, e in scheduling.queue_plan(refresh=True).batches.items()}))
            time.sleep(poll)
        batches = {b.id: b for b in models.Batch.objects.filter(pk__in=ids)}
        first_chunk = {
            batch_id: min(
                models.Chunk.objects.filter(batch_id=batch_id).values_list("finished_at", flat=True),
                key=lambda t: t.timestamp(),
            )
            for batch_id in ids
        }
    finally:
        stack.stop()

    def error(asked: Any, predicted: Any, actual: Any) -> float | None:
        if predicted is None:
            return None
        return abs((predicted - actual).total_seconds()) / (actual - asked).total_seconds()

    def after(moment: Any, batch_id: str) -> tuple[Any, Any]:
        # The first plan computed after ``moment`` (plans are read every --poll seconds).
        return next(((t, p.get(batch_id)) for t, p in polls if t >= moment), (None, None))

    run_start = min(first_chunk.values(), key=lambda t: t.timestamp())
    rows = []
    for k, batch_id in enumerate(ids):
        b = batches[batch_id]
        asked, predicted = at_submit[batch_id]
        own_t, own_eta = after(first_chunk[batch_id], batch_id)
        any_t, any_eta = after(run_start, batch_id)
        rows.append(
            {
                "batch": k + 1,
                "user": "A" if k < len(ORDER) else "B",
                "model": b.model,
                "wait_s": (b.started_at - b.created_at).total_seconds(),
                "finish_wait_s": (b.completed_at - b.created_at).total_seconds(),
                "done_at_s": (b.completed_at - batches[ids[0]].created_at).total_seconds(),
                "eta_err_submit": error(asked, predicted, b.completed_at),
                "eta_err_first_chunk": error(own_t, own_eta, b.completed_at) if own_t else None,
                "eta_err_queue_first_chunk": error(any_t, any_eta, b.completed_at) if any_t else None,
                "api_eta_minus_exact_s": (
                    api_at_submit[batch_id] - predicted.timestamp() if predicted and api_at_submit[batch_id] else None
                ),
            }
        )
    text = log.read_text()
    loads = [(m, float(s)) for m, s in re.findall(r"model (\S+) ready in ([\d.]+)s", text)]
    stopped = re.search(r"stopped \(swaps=(\d+) scheduler=(\w+)\)", text)
    if stopped is None:
        raise RuntimeError("the worker did not log its swaps:\n" + text[-3000:])
    total = max(b.completed_at for b in batches.values()) - min(b.created_at for b in batches.values())
    return {
        "policy": policy,
        "fair_share": fair_share,
        "env": fair_env,
        "b_submitted_at_s": (
            (batches[ids[-1]].created_at - batches[ids[0]].created_at).total_seconds() if second else None
        ),
        "loaded_at_b_submit": b_loaded,
        "expected_swaps_after_b": expected_after_b,
        "logged_policy": stopped.group(2),
        "total_s": total.total_seconds(),
        "swaps": int(stopped.group(1)),
        "expected_swaps": expected_swaps,
        "loads": loads,
        "load_s": sum(seconds for _, seconds in loads),
        "rows": rows,
    }


def child(args: argparse.Namespace, policy: str, *extra: str) -> dict[str, Any]:
    """One run in its own process (Django is set up once per process), its JSON back."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [PYTHON, str(Path(__file__).resolve()), "--run", policy, *extra, "--json", out.name]
        for option in ("scale", "requests", "chunk", "poll"):
            command += [f"--{option}", str(getattr(args, option))]
        subprocess.run(command, cwd=REPO, check=True)
        return dict(json.loads(Path(out.name).read_text()))


def two_users(args: argparse.Namespace) -> None:
    """fifo, affinity (fair share off) and fair share on (affinity inside each user's work)."""
    results = {}
    for name in args.columns:
        policy, fair_share = seed_two_users.COLUMNS[name]
        extra = ["--fair-share", fair_share, "--b-model", args.b_model, "--b-requests", str(args.b_requests)]
        extra += ["--b-delay", str(args.b_delay)]
        if args.switch_seconds is not None:
            extra += ["--switch-seconds", str(args.switch_seconds)]
        results[name] = child(args, policy, *extra)
    bound = seed_two_users.b_start_bound(args.chunk, args.scale, args.b_model)
    fair = results[args.columns[-1]]
    print(
        f"user A: 8 batches x {args.requests} requests; user B: {args.b_requests} requests on {args.b_model}, "
        f"submitted {fair['b_submitted_at_s']:.2f}s after A's first (worker had {fair['loaded_at_b_submit']!r} "
        f"loaded); chunks of {args.chunk}, one worker, timeline scaled x{args.scale} (SIMULATED engine); "
        f"fair share: {fair['env']}"
    )
    for rows in (seed_two_users.summary(results), seed_two_users.side_by_side(results)):
        print(seed_two_users.markdown(rows) if args.markdown else table(rows, list(rows[0])))
    # The targets compare the fair column with affinity's (fair share off).
    checks = seed_two_users.checks(results, bound) if {"fair", "affinity"} <= set(results) else {}
    for name, ok in checks.items():
        print(f"{'met' if ok else 'MISSED'}: {name}")
    emit({"args": vars(args), "results": results, "checks": checks}, args.json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.25, help="Time scale of the seed's timeline (0.25: 4x faster)")
    parser.add_argument("--requests", type=int, default=1000, help="Requests per batch")
    parser.add_argument("--chunk", type=int, default=100, help="BATCHSITE_CHUNK_SIZE")
    parser.add_argument("--poll", type=float, default=0.5, help="Seconds between plan reads")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--two-users", action="store_true", help="User B's batch among A's: fifo, affinity, fair")
    parser.add_argument("--b-model", default="model-b", choices=sorted(SEED_MODELS), help="User B's model")
    parser.add_argument("--b-requests", type=int, default=100, help="User B's requests")
    parser.add_argument("--b-delay", type=float, default=40.0, help="Seed seconds after A's last submission (scaled)")
    parser.add_argument("--switch-seconds", type=float, help="BATCHSITE_FAIR_SWITCH_SECONDS, seed time (scaled)")
    columns = list(seed_two_users.COLUMNS)
    parser.add_argument("--columns", nargs="+", default=columns, choices=columns, help="Two-user columns to run")
    parser.add_argument("--markdown", action="store_true", help="Two-user tables as Markdown")
    parser.add_argument("--run", choices=POLICIES, help=argparse.SUPPRESS)  # the child process for one policy
    parser.add_argument("--fair-share", choices=("on", "off"), help=argparse.SUPPRESS)  # the child's column
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.run:
        second = SecondUser(args.b_model, args.b_requests, args.b_delay) if args.fair_share else None
        run = (args.run, args.scale, args.requests, args.chunk, args.poll)
        emit(run_policy(*run, args.fair_share, second, args.switch_seconds), args.json)
        return
    if args.two_users:
        two_users(args)
        return

    results = {policy: child(args, policy) for policy in args.policies}
    print(
        f"8 batches x {args.requests} requests, chunks of {args.chunk}, one worker, "
        f"timeline scaled x{args.scale} (SIMULATED engine)"
    )
    summary = [
        {
            "policy": r["policy"],
            "total_s": r["total_s"],
            "swaps": r["swaps"],
            "expected_swaps": r["expected_swaps"],
            "loads": len(r["loads"]),
            "load_s": r["load_s"],
            "max_wait_s": max(row["wait_s"] for row in r["rows"]),
            "max_err_first_chunk": fmt(max(row["eta_err_first_chunk"] or 0 for row in r["rows"]), True),
        }
        for r in results.values()
    ]
    print(table(summary, list(summary[0])))
    side = []
    for k in range(len(ORDER)):
        row: dict[str, Any] = {"batch": k + 1, "model": ORDER[k]}
        for policy, r in results.items():
            data = r["rows"][k]
            row[f"{policy} wait_s"] = fmt(data["wait_s"])
            row[f"{policy} done_s"] = fmt(data["done_at_s"])
            row[f"{policy} err@submit"] = fmt(data["eta_err_submit"], True)
            row[f"{policy} err@1st chunk"] = fmt(data["eta_err_first_chunk"], True)
        side.append(row)
    print(table(side, list(side[0])))
    checks = {}
    for policy, r in results.items():
        worst = max((row["eta_err_first_chunk"] or 0) for row in r["rows"])
        checks[f"{policy}: ETA error after the first chunk <= 10%"] = worst <= 0.10
    if set(results) == set(POLICIES):
        fifo, affinity = results["fifo"], results["affinity"]
        saved = fifo["load_s"] - affinity["load_s"]
        bound = fifo["total_s"] - saved
        print(f"saved loads: {saved:.2f}s; FIFO total minus them: {bound:.2f}s; affinity: {affinity['total_s']:.2f}s")
        checks["affinity total <= fifo total - saved loads"] = affinity["total_s"] <= bound
        checks["swaps: fifo 7, affinity 1"] = (fifo["swaps"], affinity["swaps"]) == (7, 1)
    for name, ok in checks.items():
        print(f"{'met' if ok else 'MISSED'}: {name}")
    emit({"args": vars(args), "results": results, "checks": checks}, args.json)


if __name__ == "__main__":
    main()
