"""BATCHSITE_SCHEDULER and friends: strict parsing, defaults that keep the seed's FIFO promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchsite.env import EnvError, Reader, read_scheduler_settings

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_are_fifo_with_a_half_hour_bound():
    conf = read_scheduler_settings(Reader({}))
    assert conf.policy == "fifo"
    assert conf.affinity_max_wait_seconds == 1800
    assert conf.policy_file == ""
    assert conf.plan_seconds == 5


def test_values_are_read():
    conf = read_scheduler_settings(
        Reader(
            {
                "BATCHSITE_SCHEDULER": "affinity",
                "BATCHSITE_AFFINITY_MAX_WAIT_SECONDS": "2.5",
                "BATCHSITE_SCHEDULER_FILE": "/run/batchsite/scheduler",
                "BATCHSITE_QUEUE_PLAN_SECONDS": "0",
            }
        )
    )
    assert (conf.policy, conf.affinity_max_wait_seconds, conf.policy_file, conf.plan_seconds) == (
        "affinity",
        2.5,
        "/run/batchsite/scheduler",
        0.0,
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("BATCHSITE_SCHEDULER", "lifo"),
        ("BATCHSITE_SCHEDULER", "FIFO"),
        ("BATCHSITE_SCHEDULER", "fifo,affinity"),
        ("BATCHSITE_SCHEDULER", "\udc80"),
        ("BATCHSITE_AFFINITY_MAX_WAIT_SECONDS", "-1"),
        ("BATCHSITE_AFFINITY_MAX_WAIT_SECONDS", "30m"),
        ("BATCHSITE_AFFINITY_MAX_WAIT_SECONDS", "nan"),
        ("BATCHSITE_AFFINITY_MAX_WAIT_SECONDS", "inf"),
        ("BATCHSITE_AFFINITY_MAX_WAIT_SECONDS", "1e999"),
        ("BATCHSITE_QUEUE_PLAN_SECONDS", "-0.5"),
        ("BATCHSITE_QUEUE_PLAN_SECONDS", "soon"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name, value):
    with pytest.raises(EnvError) as info:
        read_scheduler_settings(Reader({name: value}))
    assert name in str(info.value)


def test_manage_py_refuses_to_start_with_an_unknown_policy(tmp_path):
    env = {**os.environ, "BATCHSITE_DATA_DIR": str(tmp_path), "BATCHSITE_SCHEDULER": "random"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "BATCHSITE_SCHEDULER" in result.stderr and "fifo, affinity" in result.stderr
