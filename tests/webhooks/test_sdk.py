"""webhook_url through the official openai SDK against the real web server: refusals and the cancel's event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from jobs.models import ApiKey, Batch, RegisteredModel, WebhookDelivery
from tests.conftest import CHAT_MODEL, chat_line, jsonl, run_housekeeper_once

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sdk(live_server_process: Any, transactional_db: Any, django_user_model: Any) -> openai.OpenAI:
    RegisteredModel.objects.create(name=CHAT_MODEL, source="/models/smollm2", endpoints=["chat", "completions"])
    user = django_user_model.objects.create_user(username="hook-user")
    return openai.OpenAI(base_url=live_server_process.url + "/v1", api_key=ApiKey.generate(user)[1], max_retries=0)


def test_the_sdk_gets_a_400_naming_webhook_url_and_a_cancel_writes_the_event(
    sdk, tmp_path: Path, settings: Any, live_server_process: Any
):
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl([chat_line(i) for i in range(2)]))
    file = sdk.files.create(file=path.open("rb"), purpose="batch")
    create = {"input_file_id": file.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.batches.create(**create, extra_body={"webhook_url": "http://169.254.169.254/latest/meta-data/"})
    assert refused.value.param == "webhook_url" and refused.value.code == "invalid_webhook_url"
    assert "169.254.169.254 is a link-local address" in refused.value.message
    assert not Batch.objects.exists()

    batch = sdk.batches.create(**create, extra_body={"webhook_url": "https://hooks.example.test/batches"})
    assert batch.model_extra["webhook_url"] == "https://hooks.example.test/batches"
    assert batch.model_extra["webhook_status"] == "pending"
    assert sdk.batches.cancel(batch.id).status == "cancelling"  # answered at once (issue 20 item 6)
    # The housekeeper ends it on the server's files; the event is written in that end's transaction.
    run_housekeeper_once(settings, live_server_process.data_dir, **live_server_process.storage.env)
    assert sdk.batches.retrieve(batch.id).status == "cancelled"
    delivery = WebhookDelivery.objects.get(batch_id=batch.id)
    assert delivery.event_type == "batch.cancelled" and delivery.url == "https://hooks.example.test/batches"
    assert sdk.batches.retrieve(batch.id).model_extra["webhook_status"] == "pending"
    listed = next(b for b in sdk.batches.list() if b.id == batch.id)
    assert listed.model_extra["webhook_status"] == "pending"
