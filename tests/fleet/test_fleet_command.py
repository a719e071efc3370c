"""run_ray_fleet refuses bad arguments before it touches Ray, and Ray stays out of every process
but the fleet's (the web, the API and the plain worker run without it installed)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from jobs.fleet.autoscale import wanted_workers
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "args",
    [
        ["--max-workers", "0"],
        ["--max-workers", "-3"],
        ["--max-workers", "99999999999999999999"],
        ["--max-workers", "two"],
        ["--cpus-per-worker", "nan"],
        ["--cpus-per-worker", "inf"],
        ["--cpus-per-worker", "0"],
        ["--chunks-per-worker", "0"],
        ["--poll-seconds", "-1"],
        ["--idle-seconds", "-5"],
        ["--idle-seconds", "1e308"],
        ["--name", "x" * 33],
        ["--name", "bad name"],
        ["--name", "\ud800"],
        ["--name", "-leading"],
    ],
)
def test_bad_arguments_are_refused_with_the_option_named(args):
    with pytest.raises(CommandError) as refused:
        call_command("run_ray_fleet", *args)
    assert args[0] in str(refused.value) or args[0].lstrip("-") in str(refused.value)


def test_workers_are_wanted_in_proportion_to_the_queue_up_to_the_maximum():
    assert wanted_workers(0, 2, 8) == 0
    assert wanted_workers(1, 2, 8) == 1
    assert wanted_workers(7, 2, 8) == 4
    assert wanted_workers(1000, 2, 8) == 8
    assert wanted_workers(1000, 2, None) == 500


def test_the_web_the_api_and_the_plain_worker_never_import_ray():
    code = (
        "import django, sys; django.setup(); "
        "import batchsite.wsgi, batchsite.urls, jobs.api.urls, jobs.web.urls, jobs.admin; "
        "import jobs.worker, jobs.housekeeper; "
        "from jobs.management.commands import run_gpu_worker; "
        "sys.exit(1 if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
