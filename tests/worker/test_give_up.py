"""The give-up finalize (after BATCHSITE_MAX_ATTEMPTS failed tries) drops no line: a part that
fails its check then has its lines written to the error file as ``result_lost`` (issue 20
item 2). In-process worker on the SIMULATED engine; the fault is injected from here."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.storage import default_storage

from jobs.models import Batch, File
from jobs.services import parts, results
from tests.conftest import chat_line
from tests.test_worker import drain, make_batch
from tests.worker.common import lines_of

pytestmark = pytest.mark.django_db(transaction=True)


def lose_part_then_fail_publish(monkeypatch: Any, batch_id: str, index: int, lose_input: bool) -> None:
    """The first publish: chunk ``index``'s part files (and, ``lose_input``, the input's bytes)
    vanish and the store refuses the write, so the (only) attempt fails and the give-up
    finalize finds that part failing its check."""
    publish = results._publish
    calls = []

    def flaky(batch: Batch, assembly: Any, out: Any, err: Any) -> Any:
        calls.append(batch.id)
        if len(calls) == 1:
            chunk = batch.chunks.get(index=index)
            for part in parts.recorded(chunk):
                for name in parts.names_of(batch_id, index, part):
                    default_storage.delete(name)
            if lose_input:
                default_storage.delete(File.objects.get(pk=batch.input_file_id).storage_name)
            for _, name in (out, err):
                default_storage.delete(name)
            raise OSError("the store refused the write (injected by the test)")
        return publish(batch, assembly, out, err)

    monkeypatch.setattr(results, "_publish", flaky)


@pytest.mark.parametrize("input_readable", [True, False])
def test_a_part_lost_in_the_give_up_finalize_lists_its_lines_as_result_lost(
    client, models, upload, limits, worker_conf, monkeypatch, input_readable
):
    limits(chunk_size=5)
    worker_conf(max_attempts=1)
    lines = [chat_line(i) for i in range(10)]
    lines[7]["body"]["sim_fail"] = 400  # a failed line in the kept chunk stays in the error file as it was
    batch_id = make_batch(client, upload, lines)
    lose_part_then_fail_publish(monkeypatch, batch_id, index=0, lose_input=not input_readable)
    drain()
    batch = Batch.objects.get(pk=batch_id)
    assert batch.status == "failed"
    output, errors = lines_of(batch.output_file_id), lines_of(batch.error_file_id)
    lost = [line for line in errors if (line["error"] or {}).get("code") == "result_lost"]
    # Every input line is in exactly one of the two files, and the counts are the files'.
    assert len(output) + len(errors) == 10
    assert (batch.completed, batch.failed) == (len(output), len(errors)) == (4, 6)
    assert len(lost) == 5 and all(line["response"] is None for line in lost)
    if input_readable:
        assert sorted(line["custom_id"] for line in lost) == [f"req-{i}" for i in range(5)]
        assert sorted(line["custom_id"] for line in output + errors) == sorted(f"req-{i}" for i in range(10))
    else:
        assert [line["custom_id"] for line in lost] == [None] * 5
        assert "custom_id is unknown" in lost[0]["error"]["message"]
    [error] = batch.errors["data"]
    assert error["code"] == "finalize_failed" and "injected by the test" in error["message"]
    assert "5 lines whose results were lost are in the error file as result_lost" in error["message"]
    assert ("null custom_id" in error["message"]) is not input_readable
