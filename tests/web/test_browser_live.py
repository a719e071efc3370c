"""Submit-and-watch in a real browser, on the shared live stack: the web server, one real
run_gpu_worker (vLLM on the CPU) and the demo chat model. The dashboard and the
batch page follow the batch to 100% by their own refresh, without a reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.engine import demo
from jobs.models import Batch, BatchStatus
from tests.live import wait_until
from tests.web.conftest import screenshot, server_user

pytestmark = pytest.mark.django_db(transaction=True)

LINES = 20


def request_lines(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    with path.open("w") as f:
        for i in range(LINES):
            body = {
                "messages": [{"role": "user", "content": f"Write one sentence about the number {i}."}],
                # Answers of different lengths finish one after another, so the
                # pages' refreshes see the batch partly done, not 0 then 100%.
                "max_tokens": 8 + 3 * i,
                "temperature": 0,
            }
            f.write(json.dumps({"custom_id": f"q-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
            f.write("\n")
    return path


def done_of(row: Any) -> int:
    cell = row.locator("td[data-label='Done / total']").inner_text()
    return int(cell.split("/")[0].strip().replace(",", ""))


def test_a_batch_submitted_on_the_page_runs_on_the_real_worker_and_both_pages_follow_it(stack, browser_for, tmp_path):
    user = server_user("watcher", "pw-watch-123")
    browser = browser_for(stack.url, user, "pw-watch-123")
    page = browser.page
    page.goto("/submit")
    page.set_input_files("#id_file", str(request_lines(tmp_path)))
    page.select_option("#id_model", demo.SMOLLM2_NAME)
    page.select_option("#id_endpoint", "/v1/chat/completions")
    page.fill("[name=meta_key_0]", "purpose")
    page.fill("[name=meta_value_0]", "browser test")
    page.click("#submit-button")
    page.wait_for_url("**/batches/batch_*")
    batch_id = page.url.rsplit("/", 1)[1]
    page.evaluate("window.notReloaded = true")

    dashboard = browser.context.new_page()
    dashboard.goto("/dashboard")
    dashboard.evaluate("window.notReloaded = true")
    # The worker may first have to load the model (about a minute on this CPU).
    running = dashboard.locator(f"#running tr[data-batch='{batch_id}']")
    running.wait_for(timeout=300_000)
    screenshot(dashboard, "dashboard", tmp_path)
    # A better picture once requests are finishing, if the batch is still running by then.
    try:
        wait_until(lambda: running.count() == 0 or done_of(running) > 0, 120, "the first finished requests", every=0.5)
        if running.count():
            screenshot(dashboard, "dashboard", tmp_path)
    except AssertionError:
        pass
    worker = dashboard.locator("#workers tr[data-worker='live-worker']")
    assert demo.SMOLLM2_NAME in worker.inner_text() and "CPU" in worker.inner_text()

    # The batch page reaches 100% and offers the output, by its own refresh.
    # Locators, not wait_for_function: a string predicate is eval'd in the page,
    # which the Content-Security-Policy (script-src 'self') rightly refuses.
    from playwright.sync_api import expect

    expect(page.locator("#progress-percent")).to_have_text("100%", timeout=300_000)
    page.locator("#download-output").wait_for(timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
    assert "completed" in page.inner_text("#batch-live h2")
    assert page.inner_text("#done-count") == str(LINES)
    screenshot(page, "batch", tmp_path)

    # So does the dashboard: the batch moves to the finished ones at 100%.
    finished = dashboard.locator(f"#recent tr[data-batch='{batch_id}']")
    finished.wait_for(timeout=30_000)
    assert "100%" in finished.inner_text() and "completed" in finished.inner_text()
    assert dashboard.evaluate("window.notReloaded") is True

    with page.expect_download() as download:
        page.click("#download-output")
    lines = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"q-{i}" for i in range(LINES))
    assert all(line["response"]["status_code"] == 200 for line in lines)
    assert all(line["response"]["body"]["model"] == demo.SMOLLM2_NAME for line in lines)
    assert Batch.objects.get(pk=batch_id).status == BatchStatus.COMPLETED
