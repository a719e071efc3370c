"""LiteLLM's SDK (pinned in requirements-dev.txt) against the session's live web server, as its
docs drive an OpenAI-compatible Batch API: custom_llm_provider="openai", api_base=.../v1."""

from __future__ import annotations

import os
from typing import Any

import openai
import pytest

from jobs.models import ApiKey, RegisteredModel
from tests.conftest import CHAT_MODEL, chat_line, jsonl

# LiteLLM fetches a price list from GitHub at import; the suite runs offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm  # noqa: E402 - after the variable above

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def target(live_server_process: Any, transactional_db: Any, django_user_model: Any) -> dict[str, Any]:
    RegisteredModel.objects.create(name=CHAT_MODEL, source="/models/smollm2", endpoints=["chat", "completions"])
    key = ApiKey.generate(django_user_model.objects.create_user("litellm-user"))[1]
    return {"custom_llm_provider": "openai", "api_base": live_server_process.url + "/v1", "api_key": key}


def test_litellm_batch_functions_work_end_to_end(target, tmp_path):
    content = jsonl([chat_line(i) for i in range(3)])
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    file = litellm.create_file(file=path.open("rb"), purpose="batch", **target)
    assert file.id.startswith("file-") and file.purpose == "batch" and file.bytes == len(content)
    assert litellm.file_content(file_id=file.id, **target).content == content

    batch = litellm.create_batch(
        completion_window="24h",
        endpoint="/v1/chat/completions",
        input_file_id=file.id,
        metadata={"via": "litellm"},
        **target,
    )
    assert batch.status == "in_progress" and batch.metadata == {"via": "litellm"}
    other = litellm.create_batch(
        completion_window="24h", endpoint="/v1/chat/completions", input_file_id=file.id, **target
    )
    got = litellm.retrieve_batch(batch_id=batch.id, **target)
    assert got.id == batch.id and got.request_counts.total == 3

    first = litellm.list_batches(limit=1, **target)
    assert [b.id for b in first.data] == [other.id] and first.has_more
    second = litellm.list_batches(limit=1, after=first.data[-1].id, **target)
    assert [b.id for b in second.data] == [batch.id] and not second.has_more

    cancelled = litellm.cancel_batch(batch_id=batch.id, **target)
    assert cancelled.status in ("cancelling", "cancelled")
    litellm.cancel_batch(batch_id=other.id, **target)
    # An unknown batch: LiteLLM passes the SDK's typed 404 through, with OpenAI's message.
    with pytest.raises((litellm.exceptions.NotFoundError, openai.NotFoundError)) as refused:
        litellm.retrieve_batch(batch_id="batch_nope", **target)
    assert refused.value.status_code == 404 and "No such batch" in str(refused.value)
