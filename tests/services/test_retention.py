"""The retention sweep (``manage.py delete_expired_files``): expired files lose their rows and
bytes; the input of an unfinished batch stays until the batch ends.

Batches run on the in-process worker with the SIMULATED engine: these tests are
about which files live and die, not about inference.
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db.models import F

from jobs.engine.simulated import SimulatedEngine
from jobs.models import Batch, File
from jobs.services.retention import delete_expired_files
from jobs.worker import GpuWorker
from tests.conftest import chat_line, jsonl

pytestmark = pytest.mark.django_db(transaction=True)

# What the openai SDK sends for expires_after={"anchor": "created_at", "seconds": 3600}.
IN_AN_HOUR = {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}


def pass_time(seconds: float, **filters: Any) -> None:
    """Move the clock of the files matching ``filters``: as if ``seconds`` had passed."""
    delta = timedelta(seconds=seconds)
    File.objects.filter(**filters).update(created_at=F("created_at") - delta, expires_at=F("expires_at") - delta)


def sweep() -> str:
    out = io.StringIO()
    call_command("delete_expired_files", stdout=out)
    return out.getvalue()


def bytes_on_disk(file_id: str) -> bool:
    return default_storage.exists(File.objects.get(pk=file_id).storage_name)


def upload(client: Any, lines: list[Any], **fields: str) -> str:
    f = io.BytesIO(jsonl(lines))
    f.name = "in.jsonl"
    response = client.post("/v1/files", {"file": f, "purpose": "batch", **fields}, format="multipart")
    assert response.status_code == 200, response.content
    return str(response.json()["id"])


def create(client: Any, file_id: str, **extra: Any) -> dict[str, Any]:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
    response = client.post("/v1/batches", body, format="json")
    assert response.status_code == 200, response.content
    return dict(response.json())


def drain() -> None:
    assert GpuWorker(SimulatedEngine(), exit_when_idle=True).run() == 0


def test_files_uploaded_with_expires_after_are_gone_after_the_time(client):
    expiring = upload(client, [chat_line(0)], **IN_AN_HOUR)
    kept = upload(client, [chat_line(1)])  # the 30-day default
    storage_name = File.objects.get(pk=expiring).storage_name
    assert sweep() == "Deleted 0 expired files.\n"
    assert client.get(f"/v1/files/{expiring}").status_code == 200

    pass_time(3600, pk=expiring)
    assert client.get(f"/v1/files/{expiring}").status_code == 404  # before the sweep, too
    assert sweep() == "Deleted 1 expired file.\n"
    assert not File.objects.filter(pk=expiring).exists()
    assert not default_storage.exists(storage_name)
    assert client.get(f"/v1/files/{expiring}/content").status_code == 404
    assert bytes_on_disk(kept) and client.get(f"/v1/files/{kept}").status_code == 200


def test_an_input_in_use_by_a_running_batch_survives_until_the_batch_ends(client, models):
    file_id = upload(client, [chat_line(i) for i in range(3)], **IN_AN_HOUR)
    batch = create(client, file_id)
    pass_time(3600, pk=file_id)

    assert delete_expired_files() == 0
    assert bytes_on_disk(file_id)
    # Gone for its owner, but the worker still reads it.
    assert client.get(f"/v1/files/{file_id}").status_code == 404
    drain()
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "completed"

    assert delete_expired_files() == 1
    assert not File.objects.filter(pk=file_id).exists()
    assert client.get(f"/v1/batches/{batch['id']}").json()["input_file_id"] == file_id  # ids stay, as OpenAI's


def test_an_output_with_output_expires_after_is_gone_after_the_time(client, models):
    lines = [chat_line(i) for i in range(4)]
    lines[1]["body"]["sim_fail"] = 400
    batch = create(client, upload(client, lines), output_expires_after={"anchor": "created_at", "seconds": 7200})
    plain = create(client, upload(client, [chat_line(9)]))
    drain()
    batch = client.get(f"/v1/batches/{batch['id']}").json()
    output, errors = batch["output_file_id"], batch["error_file_id"]
    for file_id in (output, errors):
        body = client.get(f"/v1/files/{file_id}").json()
        assert body["expires_at"] == body["created_at"] + 7200, body
    plain_output = client.get(f"/v1/batches/{plain['id']}").json()["output_file_id"]
    assert client.get(f"/v1/files/{plain_output}").json()["expires_at"] is None

    pass_time(7199, pk__in=[output, errors])
    assert delete_expired_files() == 0
    assert client.get(f"/v1/files/{output}/content").status_code == 200
    pass_time(1, pk__in=[output, errors])
    assert client.get(f"/v1/files/{output}/content").status_code == 404
    assert delete_expired_files() == 2
    assert not File.objects.filter(pk__in=[output, errors]).exists()
    assert File.objects.filter(pk=plain_output).exists()


def test_a_queued_batch_whose_input_expired_still_runs(client, models):
    file_id = upload(client, [chat_line(0)])
    batch = create(client, file_id)
    pass_time(31 * 86400, pk=file_id)
    assert delete_expired_files() == 0
    drain()
    assert Batch.objects.get(pk=batch["id"]).status == "completed"


def test_a_sweep_pages_through_many_expired_files(client, monkeypatch):
    from jobs.services import retention

    monkeypatch.setattr(retention, "PAGE", 3)
    ids = [upload(client, [chat_line(i)]) for i in range(7)]
    pass_time(31 * 86400, pk__in=ids)
    assert delete_expired_files() == 7
    assert not File.objects.exists()
