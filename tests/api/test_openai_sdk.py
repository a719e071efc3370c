"""The official openai SDK against the real web server process (batchsite.serve): what users run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

from jobs.models import ApiKey, RegisteredModel
from tests.conftest import CHAT_MODEL, chat_line, jsonl, run_housekeeper_once

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sdk(live_server_process: Any, transactional_db: Any, django_user_model: Any) -> openai.OpenAI:
    RegisteredModel.objects.create(name=CHAT_MODEL, source="/models/smollm2", endpoints=["chat", "completions"])
    user = django_user_model.objects.create_user(username="sdk-user")
    return openai.OpenAI(base_url=live_server_process.url + "/v1", api_key=ApiKey.generate(user)[1], max_retries=0)


def write(tmp_path: Path, lines: list[Any], name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(jsonl(lines))
    return path


def test_files_and_batches_round_trip_through_the_sdk(sdk, tmp_path, settings, live_server_process):
    path = write(tmp_path, [chat_line(i) for i in range(3)])
    file = sdk.files.create(file=path.open("rb"), purpose="batch")
    assert file.id.startswith("file-") and file.bytes == path.stat().st_size and file.purpose == "batch"
    assert sdk.files.retrieve(file.id).filename == "in.jsonl"
    assert sdk.files.content(file.id).read() == path.read_bytes()

    batch = sdk.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"team": "search"}
    )
    assert batch.status == "in_progress" and batch.model == CHAT_MODEL
    assert batch.request_counts is not None and batch.request_counts.total == 3
    assert batch.metadata == {"team": "search"}
    again = sdk.batches.retrieve(batch.id)
    assert again.id == batch.id and again.expires_at == batch.expires_at
    # The queue fields come through the SDK as extra attributes.
    assert again.model_extra is not None and again.model_extra["queue_position"] == 1

    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    run_housekeeper_once(settings, live_server_process.data_dir, **live_server_process.storage.env)
    cancelled = sdk.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None

    assert sdk.files.delete(file.id).deleted is True
    with pytest.raises(openai.NotFoundError) as info:
        sdk.files.retrieve(file.id)
    assert info.value.code == "not_found"


def test_batches_list_paginates_with_after(sdk, tmp_path):
    file = sdk.files.create(file=write(tmp_path, [chat_line(1)]).open("rb"), purpose="batch")
    ids = [
        sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(5)
    ]
    page = sdk.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    second = sdk.batches.list(limit=2, after=page.data[-1].id)
    assert [b.id for b in second.data] == ids[::-1][2:4]
    # The SDK's auto-pagination follows `after` to the end.
    assert [b.id for b in sdk.batches.list(limit=2)] == ids[::-1]


def test_sdk_raises_typed_errors_with_openai_fields(sdk, live_server_process, tmp_path):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.batches.create(input_file_id="file-x", endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    assert info.value.param == "completion_window"
    with pytest.raises(openai.NotFoundError):
        sdk.batches.retrieve("batch_missing")
    bad = openai.OpenAI(base_url=live_server_process.url + "/v1", api_key="bs-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.batches.list()
    assert auth.value.code == "invalid_api_key"


def test_a_failed_validation_reaches_the_sdk_with_line_numbers(sdk, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl([chat_line(0), b"{oops", chat_line(0)]))
    file = sdk.files.create(file=path.open("rb"), purpose="batch")
    batch = sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [("invalid_json_line", 2), ("duplicate_custom_id", 3)]


def test_a_50000_line_upload_does_not_grow_the_server_with_the_file(sdk, live_server_process, tmp_path):
    """Upload + streaming validation of ~50 MB: the server's RSS grows far less than the file."""
    server = psutil.Process(live_server_process.server_pid)
    filler = "lorem ipsum " * 80
    small = write(
        tmp_path,
        [
            chat_line(i, body={"model": CHAT_MODEL, "messages": [{"role": "user", "content": f"{i} {filler}"}]})
            for i in range(1000)
        ],
        "small.jsonl",
    )
    big = write(
        tmp_path,
        [
            chat_line(i, body={"model": CHAT_MODEL, "messages": [{"role": "user", "content": f"{i} {filler}"}]})
            for i in range(50_000)
        ],
        "big.jsonl",
    )
    assert big.stat().st_size > 45_000_000

    def upload_and_create(path: Path) -> Any:
        file = sdk.files.create(file=path.open("rb"), purpose="batch")
        return sdk.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")

    assert upload_and_create(small).status == "in_progress"  # warm up imports and caches
    before = server.memory_info().rss
    batch = upload_and_create(big)
    growth = server.memory_info().rss - before
    assert batch.status == "in_progress" and batch.request_counts.total == 50_000
    print(f"server RSS growth for a {big.stat().st_size / 1e6:.0f} MB upload: {growth / 1e6:.1f} MB")
    assert growth < big.stat().st_size / 4
    assert json.loads(sdk.files.content(batch.input_file_id).read().splitlines()[-1])["custom_id"] == "req-49999"


def test_request_ids_reach_the_sdk_and_a_final_refusal_is_sent_once(sdk, live_server_process, tmp_path):
    import httpx

    sent: list[str] = []
    client = openai.OpenAI(
        base_url=sdk.base_url,
        api_key=sdk.api_key,
        # The SDK's default retries (2), as a user runs it: a 409 would be sent three times.
        http_client=httpx.Client(event_hooks={"request": [lambda request: sent.append(request.url.path)]}),
    )
    raw = client.batches.with_raw_response.list()
    assert raw.headers["x-request-id"].startswith("req_") and raw.parse()._request_id == raw.headers["x-request-id"]
    file = client.files.create(file=write(tmp_path, [b'{"custom_id": "a"}']).open("rb"), purpose="batch")
    assert file._request_id and file._request_id.startswith("req_")
    failed = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert failed.status == "failed"
    sent.clear()
    with pytest.raises(openai.ConflictError) as info:
        client.batches.cancel(failed.id)
    assert sent == [f"/v1/batches/{failed.id}/cancel"]  # x-should-retry: false, so no retry
    assert info.value.request_id and info.value.request_id.startswith("req_")
    assert info.value.code == "batch_not_cancellable"
    with pytest.raises(openai.NotFoundError) as online:
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert online.value.code == "unknown_url" and "/v1/batches" in online.value.message
    assert online.value.request_id and online.value.request_id != info.value.request_id


def test_priority_and_quota_refusals_through_the_sdk(sdk, django_user_model, tmp_path):
    from django.contrib.auth.models import Permission

    from jobs.models import Quota

    file = sdk.files.create(file=write(tmp_path, [chat_line(1)]).open("rb"), purpose="batch")
    create = dict(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.batches.create(**create, extra_body={"priority": "high"})
    assert refused.value.code == "priority_not_allowed" and refused.value.param == "priority"
    user = django_user_model.objects.get(username="sdk-user")
    user.user_permissions.add(Permission.objects.get(codename="high_priority"))
    batch = sdk.batches.create(**create, extra_body={"priority": "high"})
    assert batch.model_extra is not None and batch.model_extra["priority"] == "high"
    Quota.objects.create(user=user, max_queued_batches=1)
    with pytest.raises(openai.RateLimitError) as full:
        sdk.batches.create(**create)
    assert full.value.code == "user_queue_full"
    assert "You have 1 batches queued or running; your limit is 1." in full.value.message
