"""/v1/responses as a batch endpoint: which models serve it, and validation of its lines.

Running the lines through vLLM is tests/engine/test_responses.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from jobs.models import Chunk
from tests.conftest import CHAT_MODEL, EMBED_MODEL, jsonl

pytestmark = pytest.mark.django_db

RESPONSES = "/v1/responses"


def responses_line(i: int, model: str = CHAT_MODEL, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": f"r-{i}",
        "method": "POST",
        "url": RESPONSES,
        "body": {"model": model, "input": f"Say {i}", "max_output_tokens": 8, **body},
    }


def create(client: Any, file_id: str, endpoint: str = RESPONSES) -> Any:
    return client.post(
        "/v1/batches", {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}, format="json"
    )


def test_models_list_the_endpoints_each_model_serves(client, models):
    body = client.get("/v1/models").json()
    served = {m["id"]: m["endpoints"] for m in body["data"]}
    assert served == {
        CHAT_MODEL: ["/v1/chat/completions", "/v1/completions", "/v1/responses"],
        EMBED_MODEL: ["/v1/embeddings"],
    }
    assert client.get(f"/v1/models/{EMBED_MODEL}").json()["endpoints"] == ["/v1/embeddings"]


def test_a_responses_batch_for_a_chat_model_is_queued(client, models, upload):
    file = upload(jsonl([responses_line(i) for i in range(3)]))
    response = create(client, file["id"])
    assert response.status_code == 200, response.content
    batch = response.json()
    assert batch["status"] == "in_progress" and batch["endpoint"] == RESPONSES and batch["model"] == CHAT_MODEL
    assert batch["request_counts"]["total"] == 3
    assert Chunk.objects.filter(batch_id=batch["id"]).count() == 1


def test_a_responses_line_for_an_embeddings_model_is_refused(client, models, upload):
    file = upload(jsonl([responses_line(0, model=EMBED_MODEL)]))
    batch = create(client, file["id"]).json()
    assert batch["status"] == "failed"
    [error] = batch["errors"]["data"]
    assert error["code"] == "model_not_supported" and error["line"] == 1
    assert RESPONSES in error["message"]
    assert not Chunk.objects.exists()


def test_responses_lines_in_a_chat_batch_are_refused_by_line(client, models, upload):
    from tests.conftest import chat_line

    file = upload(jsonl([chat_line(0), responses_line(1)]))
    batch = create(client, file["id"], endpoint="/v1/chat/completions").json()
    assert batch["status"] == "failed"
    assert [(e["line"], e["code"]) for e in batch["errors"]["data"]] == [(2, "invalid_url")]


def test_a_stream_responses_line_is_refused_at_create(client, models, upload):
    file = upload(jsonl([responses_line(0, stream=True)]))
    batch = create(client, file["id"]).json()
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "unsupported_stream"


def test_an_embeddings_model_cannot_take_a_responses_batch_by_the_upload_shortcut(client, models):
    import io

    f = io.BytesIO(jsonl([{"custom_id": "a", "method": "POST", "url": RESPONSES, "body": {"input": "x"}}]))
    f.name = "in.jsonl"
    response = client.post("/v1/batches", {"file": f, "model": EMBED_MODEL, "endpoint": RESPONSES}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_supported"
