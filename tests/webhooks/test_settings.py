"""The webhook settings parse strictly: a typo stops start-up naming the variable."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest

from batchsite.env import EnvError, Reader, parse_duration, read_webhook_settings
from tests.conftest import ROOT


def test_defaults_refuse_private_networks_and_retry_for_72_hours():
    conf = read_webhook_settings(Reader({}))
    assert conf.allow_private is False and conf.allowed_networks == ()
    assert conf.backoff == (5, 300, 1800, 7200, 18000, 36000) and conf.retry_for == 72 * 3600
    assert conf.timeout_seconds == 10 and conf.lease_seconds > 2 * conf.timeout_seconds


def test_values_parse():
    conf = read_webhook_settings(
        Reader(
            {
                "BATCHSITE_WEBHOOK_ALLOW_PRIVATE": "yes",
                "BATCHSITE_WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8, fd00::/8,192.168.4.7",
                "BATCHSITE_WEBHOOK_BACKOFF": "0.5s,2,1m,1h,1d",
                "BATCHSITE_WEBHOOK_RETRY_FOR": "3d",
                "BATCHSITE_WEBHOOK_TIMEOUT_SECONDS": "2.5",
            }
        )
    )
    assert conf.allow_private is True
    assert conf.allowed_networks == tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "fd00::/8", "192.168.4.7/32"))
    assert conf.backoff == (0.5, 2, 60, 3600, 86400) and conf.retry_for == 3 * 86400
    assert conf.timeout_seconds == 2.5


@pytest.mark.parametrize("text", ["0", "-1s", "5x", "s", "nan", "inf", "1e400", "366d", " "])
def test_a_bad_duration_is_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "name, value",
    [
        ("BATCHSITE_WEBHOOK_ALLOW_PRIVATE", "sure"),
        ("BATCHSITE_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.1/8"),
        ("BATCHSITE_WEBHOOK_ALLOWED_NETWORKS", "intranet"),
        ("BATCHSITE_WEBHOOK_BACKOFF", "5s,soon"),
        ("BATCHSITE_WEBHOOK_BACKOFF", ",,"),
        ("BATCHSITE_WEBHOOK_RETRY_FOR", "forever"),
        ("BATCHSITE_WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("BATCHSITE_WEBHOOK_POLL_SECONDS", "-1"),
    ],
)
def test_a_bad_value_names_the_variable(name, value):
    with pytest.raises(EnvError, match=name):
        read_webhook_settings(Reader({name: value}))


def test_manage_py_refuses_to_start_with_a_bad_webhook_setting(tmp_path):
    env = {**os.environ, "BATCHSITE_DATA_DIR": str(tmp_path), "BATCHSITE_WEBHOOK_ALLOWED_NETWORKS": "10.0.0.1/8"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "BATCHSITE_WEBHOOK_ALLOWED_NETWORKS" in result.stderr
    assert "host bits set" in result.stderr
