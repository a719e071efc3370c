"""The chaos run, short: bench/chaos.py for about 45 s of random SIGKILLs on a whole stack.

PostgreSQL (its own throwaway server), moto's S3 server, two gunicorns, three
workers on the SIMULATED engine (jobs/engine/simulated.py: the run is about the
queue, the files and the webhooks surviving kills, not inference) and the
housekeeper, each under bin/supervise, with a webhook receiver that goes down.
It runs in the SQLite pass of the suite only: the PostgreSQL pass would run the
same thing a second time (the run always uses a PostgreSQL of its own).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="runs in the SQLite pass only; the chaos run starts its own PostgreSQL",
    ),
    pytest.mark.skipif(shutil.which("initdb") is None, reason="needs PostgreSQL's server binaries (initdb)"),
]


def test_random_sigkills_of_every_kind_lose_and_duplicate_no_line(tmp_path):
    out = tmp_path / "chaos.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
    env.pop("BATCHSITE_DATA_DIR", None)
    args = ["--duration", "45", "--kill-every", "4", "--batches", "5", "--lines", "200", "600"]
    args += ["--receiver-down", "15", "--quiet-timeout", "240", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "bench/chaos.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    print(done.stdout)
    assert out.exists(), done.stderr[-4000:]
    report = json.loads(out.read_text())
    batches = report["batches"]

    assert report["failures"] == [], report["failures"]
    assert done.returncode == 0, done.stderr[-4000:]
    assert len(batches) >= 5 and all(b["status"] == "completed" for b in batches), batches
    assert sum(b["lost"] for b in batches) == 0 and sum(b["duplicated"] for b in batches) == 0
    assert sum(b["unexpected"] for b in batches) == 0 and not [b for b in batches if b["counts"]]
    assert report["lines"] == sum(b["lines"] for b in batches) >= 5 * 200
    # Every kind was killed, and every kill was survived (each supervisor started its command again).
    assert all(report["kills"][kind] >= 1 for kind in ("web", "worker", "housekeeper")), report["kills"]
    assert sum(report["restarts"].values()) >= report["kills_total"] >= 8
    # The work filled the run, so kills landed on workers holding claims, which others took back.
    assert report["database"]["chunks_claimed_again"] >= 1, report["database"]
    assert report["webhooks"]["missing"] == [] and report["webhooks"]["two_events"] == []
    assert report["receiver_outages_s"] and report["bad_webhook_posts"] == 0
    assert report["metrics"]["falls"] == [] and report["metrics"]["scrapes"] >= 20
    assert report["metrics"]["requests_total"] == report["lines"]  # each line counted once
    assert report["orphans"] == [] and report["shutdown_hung"] == []
