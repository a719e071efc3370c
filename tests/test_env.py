"""A bad environment value stops startup with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchsite.env import EnvError, Reader, read_https_settings, read_limits, secret_key, trusted_proxies

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name, value",
    [
        ("DEBUG", "ture"),
        ("DATABASE_URL", "mysql://x@y/z"),
        ("DATABASE_URL", "not a url"),
        ("SECRET_KEY", "short"),
        ("SECRET_KEY", "0123456789" * 4 + "abcdefghi"),  # 49 characters: under Django's deploy bar of 50
        ("SECURE_PROXY_SSL_HEADER", "https"),
        ("BATCHSITE_CHUNK_SIZE", "5k"),
        ("BATCHSITE_CHUNK_SIZE", "0"),
        ("BATCHSITE_MAX_UPLOAD_BYTES", "-1"),
        ("BATCHSITE_COMPLETION_WINDOWS", "tomorrow"),
        ("BATCHSITE_INPUT_EXPIRES_AFTER_SECONDS", "30d"),
        ("BATCHSITE_INPUT_EXPIRES_AFTER_SECONDS", "-1"),
        ("ALLOWED_HOSTS", ","),
    ],
)
def test_manage_py_refuses_to_start_and_names_the_variable(tmp_path, name, value):
    env = {**os.environ, "BATCHSITE_DATA_DIR": str(tmp_path), name: value}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert name in result.stderr


def test_defaults_run_on_a_laptop():
    limits = read_limits(Reader({}))
    assert limits.chunk_size == 5000
    assert limits.max_requests_per_batch == 50_000
    assert limits.max_queued_batches == 10
    assert limits.max_queued_requests == 500_000
    assert limits.max_upload_bytes == 200 * 1024 * 1024
    assert limits.completion_windows == ("24h",)


def test_values_parse_strictly():
    reader = Reader({"A": "1_000", "B": "off", "C": "x, y"})
    assert reader.integer("A", 0) == 1000
    assert reader.flag("B", True) is False
    assert reader.items("C", []) == ["x", "y"]
    with pytest.raises(EnvError, match="A="):
        Reader({"A": "1.5"}).integer("A", 0)


def test_a_secret_key_is_generated_once_and_kept(tmp_path):
    first = secret_key(Reader({}), tmp_path)
    assert len(first) >= 50 and secret_key(Reader({}), tmp_path) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "value, words",
    [
        ("x" * 49, "at least 50 characters"),
        ("ab" * 40, "5 of them different"),
        ("django-insecure-" + "0123456789abcdef" * 4, "django-insecure-"),
    ],
)
def test_a_weak_secret_key_is_refused(tmp_path, value, words):
    with pytest.raises(EnvError, match=words):
        secret_key(Reader({"SECRET_KEY": value}), tmp_path)


def test_https_settings_are_off_by_default_and_parse_strictly():
    off = read_https_settings(Reader({}))
    assert not (off.ssl_redirect or off.hsts_seconds or off.session_cookie_secure or off.csrf_cookie_secure)
    assert off.proxy_ssl_header is None
    on = read_https_settings(Reader(DEPLOY_ENV))
    assert on.ssl_redirect and on.hsts_seconds == 31_536_000 and on.hsts_include_subdomains and on.hsts_preload
    assert on.session_cookie_secure and on.csrf_cookie_secure
    assert on.proxy_ssl_header == ("HTTP_X_FORWARDED_PROTO", "https")
    for name, value in [
        ("SECURE_HSTS_SECONDS", "1y"),
        ("SECURE_HSTS_SECONDS", "-1"),
        ("SECURE_SSL_REDIRECT", "sometimes"),
        ("SESSION_COOKIE_SECURE", "2"),
        ("CSRF_COOKIE_SECURE", "secure"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto"),
        ("SECURE_PROXY_SSL_HEADER", "HTTP_X_FORWARDED_PROTO: https"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto: "),
    ]:
        with pytest.raises(EnvError, match=name):
            read_https_settings(Reader({**DEPLOY_ENV, name: value}))
    with pytest.raises(EnvError, match="SECURE_HSTS_SECONDS"):
        read_https_settings(Reader({"SECURE_HSTS_PRELOAD": "1"}))


# What README's "In production" section sets, behind a proxy that terminates TLS.
DEPLOY_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "n7Vq2mZr5XcB8wL1pK4sT9yD3fH6jG0aE2uR5iO8tY1qW4eR7tY0uI3oP6aS9dF2",
    "ALLOWED_HOSTS": "batch.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://batch.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
}


def deploy_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "BATCHSITE_DATA_DIR": str(tmp_path), **env}
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_is_clean_with_the_production_settings(tmp_path):
    result = deploy_check(tmp_path, **DEPLOY_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_names_what_the_laptop_default_leaves_off(tmp_path):
    result = deploy_check(tmp_path)
    assert result.returncode != 0
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in result.stderr + result.stdout


def test_trusted_proxies_are_none_by_default_and_parse_strictly():
    import ipaddress

    assert trusted_proxies(Reader({})) == ()
    value = {"BATCHSITE_TRUSTED_PROXIES": "127.0.0.1/32, 10.0.0.0/8,::1/128"}
    assert trusted_proxies(Reader(value)) == tuple(
        ipaddress.ip_network(n) for n in ("127.0.0.1/32", "10.0.0.0/8", "::1/128")
    )
    for bad in ("10.0.0.1/8", "proxy.internal", "127.0.0.1/33", "\ud800"):
        with pytest.raises(EnvError, match="BATCHSITE_TRUSTED_PROXIES"):
            trusted_proxies(Reader({"BATCHSITE_TRUSTED_PROXIES": bad}))
