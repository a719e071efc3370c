"""The OpenAPI schema at /v1/openapi.json and the API pages at /docs/.

The schema's objects are written by hand (jobs/api/schema.py) beside the code
that builds the real ones (jobs/services/objects.py), so these tests hold the two
to the same fields. bin/fuzz-api (in CI) checks every real response against it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from jobs.api.registry import model_body
from jobs.models import RegisteredModel
from jobs.services.objects import batch_object
from tests.conftest import chat_line, jsonl

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("get", "/v1/files"),
    ("post", "/v1/files"),
    ("get", "/v1/files/{file_id}"),
    ("delete", "/v1/files/{file_id}"),
    ("get", "/v1/files/{file_id}/content"),
    ("get", "/v1/batches"),
    ("post", "/v1/batches"),
    ("get", "/v1/batches/{batch_id}"),
    ("post", "/v1/batches/{batch_id}/cancel"),
    ("post", "/v1/batches/{batch_id}/retry"),
    ("post", "/v1/batches/estimate"),
    ("get", "/v1/batches/{batch_id}/results"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{model}"),
}


@pytest.fixture
def openapi(db: Any) -> dict[str, Any]:
    response = Client().get("/v1/openapi.json")  # no API key: the schema is public
    assert response.status_code == 200 and response["Content-Type"] == "application/vnd.oai.openapi+json"
    return dict(response.json())


def properties(openapi: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(openapi["components"]["schemas"][name]["properties"])


def extensions(openapi: dict[str, Any], name: str) -> set[str]:
    return {key for key, prop in properties(openapi, name).items() if prop.get("x-batchsite-extension")}


def test_the_schema_describes_every_operation(openapi):
    assert openapi["openapi"].startswith("3.")
    operations = {(method, path) for path, item in openapi["paths"].items() for method in item}
    assert operations == OPERATIONS
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            assert operation["security"] == [{"ApiKey": []}], (method, path)
            assert {"200", "401"} <= set(operation["responses"]), (method, path)
    assert openapi["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer bs-...`.",
    }


def test_the_batch_object_is_described_field_by_field_with_the_extensions_marked(openapi, client, models, upload):
    file = upload(jsonl([chat_line(0)]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    real = client.post("/v1/batches", body, format="json").json()
    from jobs.models import Batch

    assert set(properties(openapi, "BatchObject")) == set(real) == set(batch_object(Batch.objects.get()))
    assert extensions(openapi, "BatchObject") == {
        "queue_position",
        "progress_percent",
        "estimated_completion_time",
        "started_at",
        "webhook_url",
        "webhook_status",
        "retry_of",
        "priority",
    }
    assert set(properties(openapi, "BatchList")) == set(client.get("/v1/batches").json())


def test_the_file_and_model_objects_match_what_the_api_returns(openapi, client, models, upload):
    file = upload(jsonl([chat_line(0)]))
    assert set(properties(openapi, "FileObject")) == set(file)
    assert set(properties(openapi, "FileList")) == set(client.get("/v1/files").json())
    assert set(properties(openapi, "FileDeleted")) == set(client.delete(f"/v1/files/{file['id']}").json())
    model = model_body(RegisteredModel.objects.first())
    assert set(properties(openapi, "ModelObject")) == set(model)
    assert extensions(openapi, "ModelObject") == {"endpoints"}
    assert set(properties(openapi, "Error")) == set(client.get("/v1/files/file-nope").json())


def test_retry_is_marked_as_an_extension_and_creates_link_to_what_they_make(openapi):
    assert openapi["paths"]["/v1/batches/{batch_id}/retry"]["post"]["x-batchsite-extension"] is True
    results = openapi["paths"]["/v1/batches/{batch_id}/results"]["get"]
    assert results["x-batchsite-extension"] is True
    assert [p["schema"]["enum"] for p in results["parameters"] if p["name"] == "file"] == [["error", "output"]]
    links = openapi["paths"]["/v1/files"]["post"]["responses"]["200"]["links"]
    assert links["CreateBatch"]["requestBody"]["input_file_id"] == "$response.body#/id"
    assert links["RetrieveFile"] == {"operationId": "retrieveFile", "parameters": {"file_id": "$response.body#/id"}}


@pytest.mark.parametrize("page", ["/docs/", "/docs/swagger/"])
def test_the_api_pages_work_offline_from_vendored_assets(db, page):
    client = Client()
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets, html
    for asset in assets:
        assert asset.startswith("/static/"), f"{asset} is not served by batchsite itself"
        assert client.get(asset).status_code == 200, asset
    assert "/v1/openapi.json" in html


def test_the_estimate_is_documented_as_an_extension_with_its_fields(openapi):
    operation = openapi["paths"]["/v1/batches/estimate"]["post"]
    assert operation["x-batchsite-extension"] is True
    assert {"400", "404"} <= set(operation["responses"])
    assert {"object", "requests", "prompt_tokens", "max_output_tokens", "estimated_seconds", "queue_position"} | {
        "estimated_start_time",
        "estimated_completion_time",
    } <= set(properties(openapi, "EstimateObject"))
