"""The storage backends (jobs/storage.py) on a real S3-compatible server (moto's, on loopback) and on disk.

Whatever --storage the session runs with, these tests use both backends
directly: they are about the backends, not about the API on top of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile

from batchsite.env import EnvError, Reader, object_store
from jobs.services.jsonl import iter_lines
from jobs.storage import LocalStorage, S3Storage, open_range, writer
from tests.conftest import ROOT
from tests.s3 import BUCKET, S3Server


class Requests:
    """The Range header of every GetObject the storage's boto3 client sends (of one key, if given)."""

    def __init__(self, storage: S3Storage, key: str = "") -> None:
        self.key = key
        self.ranges: list[str | None] = []
        storage._client.meta.events.register("before-send.s3.GetObject", self._record)

    def _record(self, request: Any, **_: Any) -> None:
        if self.key and not request.url.split("?")[0].endswith(self.key):
            return
        value = request.headers.get("Range")
        self.ranges.append(value.decode() if isinstance(value, bytes) else value)


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Storage]:
    prefix = s3_server.new_prefix("storage")
    yield S3Storage(bucket_name=BUCKET, location=prefix, endpoint_url=s3_server.endpoint)


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(location=str(tmp_path / "store"))


def lines_file(n: int, width: int = 100) -> bytes:
    return b"".join(b'{"custom_id": "c%06d", "pad": "%s"}\n' % (i, b"x" * width) for i in range(n))


def test_a_chunk_is_one_get_of_its_byte_range_never_the_whole_object(s3):
    content = lines_file(50_000)  # ~6 MB
    s3.save("in.jsonl", ContentFile(content))
    start = content.index(b'{"custom_id": "c020000"')
    end = content.index(b'{"custom_id": "c020050"')
    sent = Requests(s3)
    with open_range(s3, "in.jsonl", start, end) as source:
        got = [line.data for line in iter_lines(source, 1 << 20, start, end, 20_001)]
    assert [line[:23] for line in got] == [b'{"custom_id": "c0%05d"' % i for i in range(20_000, 20_050)]
    assert sent.ranges == [f"bytes={start}-{end - 1}"]


def test_reading_a_whole_object_streams_it_in_ranges_of_the_buffer(s3):
    content = lines_file(30_000)
    s3.save("big.jsonl", ContentFile(content))
    with s3.open("big.jsonl", "rb") as fh:
        assert fh.size == len(content)
        first = fh.read(1000)
        assert first == content[:1000]
        rest = fh.read()
    assert first + rest == content


def test_a_missing_object_is_file_not_found_as_on_a_disk(s3, local):
    for storage in (s3, local):
        with pytest.raises(FileNotFoundError):
            storage.open("nope.jsonl", "rb")


def test_a_writer_stores_the_object_only_when_it_closes_without_error(s3, s3_server):
    parts = [os.urandom(1 << 20) for _ in range(12)]  # 12 MiB: two multipart parts
    with writer(s3, "out/whole.jsonl") as out:
        for part in parts:
            out.write(part)
        assert not s3.exists("out/whole.jsonl")  # nothing visible before the end
    with s3.open("out/whole.jsonl", "rb") as fh:
        assert fh.read() == b"".join(parts)

    with pytest.raises(RuntimeError), writer(s3, "out/broken.jsonl") as out:
        for part in parts:
            out.write(part)
        raise RuntimeError("the finalize failed half way")
    assert not s3.exists("out/broken.jsonl")
    uploads = s3_server.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert [u for u in uploads if u["Key"].startswith(s3.location)] == []  # aborted, not left to bill


def test_the_local_writer_is_atomic_and_leaves_no_temp_file(local):
    with writer(local, "a/b.jsonl") as out:
        out.write(b"one\n")
        assert not local.exists("a/b.jsonl")
    assert local.open("a/b.jsonl").read() == b"one\n"
    with pytest.raises(ValueError), writer(local, "a/c.jsonl") as out:
        out.write(b"half")
        raise ValueError("stop")
    assert sorted(p.name for p in Path(local.location, "a").iterdir()) == ["b.jsonl"]


def test_local_ranged_reads_start_where_asked(local):
    content = lines_file(100)
    local.save("x.jsonl", ContentFile(content))
    start = content.index(b'{"custom_id": "c000050"')
    with open_range(local, "x.jsonl", start, len(content)) as fh:
        assert fh.tell() == start and fh.read(23) == b'{"custom_id": "c000050"'


def test_settings_build_the_s3_backend_from_batchsite_storage_and_aws_variables(tmp_path, s3_server):
    env = {
        **os.environ,
        "BATCHSITE_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "batchsite.settings",
        **s3_server.env("from-env/prefix"),
    }
    code = (
        "import django; django.setup()\n"
        "from django.core.files.storage import default_storage as s\n"
        "from django.core.files.base import ContentFile\n"
        "s._setup()\n"
        "print(type(s._wrapped).__name__, s.bucket_name, s.location, s.endpoint_url)\n"
        "s.save('probe.txt', ContentFile(b'hi'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["S3Storage", BUCKET, "from-env/prefix", s3_server.endpoint]
    assert s3_server.keys("from-env/prefix") == ["probe.txt"]


@pytest.mark.parametrize(
    "value, bucket, prefix",
    [("s3://my-bucket", "my-bucket", ""), ("s3://my.bucket-1/a/b/", "my.bucket-1", "a/b"), ("s3://abc//x", "abc", "x")],
)
def test_batchsite_storage_names_a_bucket_and_a_prefix(value, bucket, prefix):
    store = object_store(Reader({"BATCHSITE_STORAGE": value}))
    assert store is not None and (store.bucket, store.prefix) == (bucket, prefix)
    assert object_store(Reader({})) is None and object_store(Reader({"BATCHSITE_STORAGE": ""})) is None


@pytest.mark.parametrize(
    "env, named",
    [
        ({"BATCHSITE_STORAGE": "s3://My_Bucket/x"}, "BATCHSITE_STORAGE"),
        ({"BATCHSITE_STORAGE": "s3://ab"}, "BATCHSITE_STORAGE"),
        ({"BATCHSITE_STORAGE": "s3://" + "b" * 64}, "BATCHSITE_STORAGE"),
        ({"BATCHSITE_STORAGE": "gs://bucket/x"}, "BATCHSITE_STORAGE"),
        ({"BATCHSITE_STORAGE": "/var/lib/batchsite"}, "BATCHSITE_STORAGE"),
        ({"BATCHSITE_STORAGE": "s3://key:secret@bucket/x"}, "BATCHSITE_STORAGE"),
        ({"BATCHSITE_STORAGE": "s3://bucket:9000/x"}, "BATCHSITE_STORAGE"),
        ({"BATCHSITE_STORAGE": "s3://bucket/../other"}, "BATCHSITE_STORAGE"),
        ({"BATCHSITE_STORAGE": "s3://bucket/x?versionId=1"}, "BATCHSITE_STORAGE"),
        ({"BATCHSITE_STORAGE": "s3://bucket\udcff/x"}, "BATCHSITE_STORAGE"),
        ({"BATCHSITE_STORAGE": "s3://bucket", "AWS_ENDPOINT_URL": "minio:9000"}, "AWS_ENDPOINT_URL"),
        ({"BATCHSITE_STORAGE": "s3://bucket", "AWS_ENDPOINT_URL": "ftp://minio"}, "AWS_ENDPOINT_URL"),
        ({"BATCHSITE_STORAGE": "s3://bucket", "AWS_ACCESS_KEY_ID": "AKIA"}, "AWS_SECRET_ACCESS_KEY"),
        ({"BATCHSITE_STORAGE": "s3://bucket", "AWS_S3_ADDRESSING_STYLE": "sideways"}, "AWS_S3_ADDRESSING_STYLE"),
    ],
)
def test_a_bad_storage_setting_stops_startup_naming_the_variable(env, named):
    with pytest.raises(EnvError, match=named):
        object_store(Reader(env))


def test_a_download_streams_from_the_store_in_blocks(client, upload, settings):
    """GET /v1/files/{id}/content answers as the bytes arrive from the store (either backend)."""
    content = lines_file(20_000)  # ~2.7 MB
    file = upload(content)
    response = client.get(f"/v1/files/{file['id']}/content")
    assert response.status_code == 200 and response.streaming
    assert int(response["Content-Length"]) == len(content)
    blocks = list(response.streaming_content)
    assert len(blocks) > 1 and len(blocks[0]) == 1 << 16
    assert b"".join(blocks) == content
    assert [p for p in Path(settings.UPLOAD_TMP_DIR).rglob("*") if p.is_file()] == []  # nothing staged


@pytest.mark.django_db(transaction=True)
def test_a_worker_reads_each_chunk_with_one_ranged_get_of_its_bytes(
    client, upload, models, limits, settings, s3_server
):
    """On S3, the worker's reads of a batch's input are exactly its chunks' byte ranges (SIMULATED engine:
    this is about reading the input, not inference)."""
    from django.core.files.storage import default_storage

    from jobs.engine.simulated import SimulatedEngine
    from jobs.models import Batch, Chunk, File
    from jobs.worker import GpuWorker
    from tests.conftest import chat_line, jsonl

    settings.STORAGES = {**settings.STORAGES, "default": s3_server.storage(s3_server.new_prefix("ranged"))}
    limits(chunk_size=25)
    file = upload(jsonl([chat_line(i) for i in range(100)]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = client.post("/v1/batches", body, format="json").json()["id"]
    input_name = File.objects.get(pk=file["id"]).storage_name
    sent = Requests(default_storage._wrapped, input_name)  # reads of the input only, not of the parts
    assert GpuWorker(SimulatedEngine(), exit_when_idle=True).run() == 0
    assert Batch.objects.get(pk=batch_id).status == "completed"
    chunks = Chunk.objects.filter(batch_id=batch_id).order_by("index")
    assert len(chunks) == 4
    assert sorted(sent.ranges) == sorted(f"bytes={c.start_byte}-{c.end_byte - 1}" for c in chunks)


def test_a_missing_object_is_file_not_found_for_a_ranged_read_too(s3, local):
    for storage in (s3, local):
        with pytest.raises(FileNotFoundError):
            open_range(storage, "nope.jsonl", 10, 20)
