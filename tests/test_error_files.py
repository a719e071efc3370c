"""Error files are purpose "batch_output", as OpenAI's are, including rows stored before (migration 0008)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from openai.types import FileObject

from jobs.models import File
from tests.conftest import chat_line
from tests.test_worker import drain, make_batch

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_error_file_is_batch_output_and_listed_with_that_purpose(client, models, upload):
    lines = [chat_line(i) for i in range(3)]
    lines[1]["body"]["sim_fail"] = 400
    batch_id = make_batch(client, upload, lines)
    drain()
    batch = client.get(f"/v1/batches/{batch_id}").json()
    error = client.get(f"/v1/files/{batch['error_file_id']}").json()
    assert FileObject.model_validate(error, strict=True).purpose == "batch_output"
    listed = client.get("/v1/files", {"purpose": "batch_output"}).json()["data"]
    assert {f["id"] for f in listed} == {batch["output_file_id"], batch["error_file_id"]}
    assert client.get("/v1/files", {"purpose": "batch_error"}).json()["data"] == []


def test_the_clients_migration_relabels_stored_error_files_and_nothing_else(user):
    executor = MigrationExecutor(connection)
    # Found by name, not number: numbers are re-chained when branches merge.
    [ours] = [key for key in executor.loader.disk_migrations if key[0] == "jobs" and key[1].endswith("_clients")]
    before = [dep for dep in executor.loader.disk_migrations[ours].dependencies if dep[0] == "jobs"]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("jobs", "File")
    for purpose in ("batch", "batch_output", "batch_error"):
        old.objects.create(id=f"file-{purpose}", owner_id=user.pk, purpose=purpose, filename="f", storage_name="x")
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    purposes = dict(File.objects.values_list("id", "purpose"))
    assert purposes == {"file-batch": "batch", "file-batch_output": "batch_output", "file-batch_error": "batch_output"}
