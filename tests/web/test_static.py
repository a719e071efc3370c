"""Static files under batchsite.serve with DEBUG=0 (how bin/start serves them): WhiteNoise, no CDN."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("web/site.css", "text/css"),
        ("web/app.js", "text/javascript"),
        ("web/vendor/htmx-2.0.11.min.js", "text/javascript"),
        ("web/favicon.svg", "image/svg+xml"),
    ],
)
def test_the_server_serves_the_vendored_static_files_through_whitenoise(live_server_process, path, content_type):
    status, headers, body = fetch(f"{live_server_process.url}/static/{path}")
    assert status == 200 and headers["Content-Type"].startswith(content_type)
    assert body == (ROOT / "static" / path).read_bytes()
    assert "max-age" in headers.get("Cache-Control", "")


@pytest.mark.django_db
def test_the_pages_fetch_nothing_from_another_host(web, models):
    pages = ("/dashboard", "/submit", "/batches", "/keys")
    for path in pages:
        html = web.get(path).content.decode()
        assert "<html" in html, path
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert not re.match(r"^(https?:)?//", url), (path, url)
    htmx = (ROOT / "static" / "web" / "vendor" / "htmx-2.0.11.min.js").read_text()
    assert htmx.startswith("var htmx=function()")


def test_debug_is_off_under_the_server_and_a_missing_page_is_ours(live_server_process):
    status, _, body = fetch(f"{live_server_process.url}/no/such/page")
    assert status == 404 and b"Not found" in body and b"batchsite" in body
    assert b"Django tried these URL patterns" not in body
