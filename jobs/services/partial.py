"""Results so far (GET /v1/batches/{id}/results): the lines a batch has finished, read from
what is durably stored, each once, byte for byte as the final file will hold them.

While a batch runs, its finished lines are its chunks' recorded parts (claims'
checkpoints and last segments, and lines settled at create time), in the order
finalize copies them into the output and error files. Once it ends, the answer
is its file. A finalize that ends the batch while a download reads the parts
deletes them: the download then goes on in the final file, skipping the lines
it already sent (by their unique ``id``), so nothing is sent twice or missed.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.core.files.storage import default_storage

from jobs.models import Batch, File
from jobs.services import files as file_service
from jobs.services import parts

FILES = ("output", "error")


def download_name(batch: Batch, which: str) -> str:
    """The file name a results-so-far download is saved under (the API's and the page's)."""
    return f"{batch.id}_{which}_so_far.jsonl"


def _key(line: bytes) -> bytes:
    """A line's ``id`` (batch_req_...: the first key of every result and error line)."""
    return line[: line.find(b",")]


def _final(batch: Batch, which: str, sent: set[bytes]) -> Iterator[bytes]:
    file_id = batch.output_file_id if which == "output" else batch.error_file_id
    if not file_id:
        return
    file = File.objects.filter(pk=file_id).first()
    if file is None:  # deleted by its owner: nothing left to read
        return
    with file_service.open_content(file) as fh:
        for line in fh:
            if not sent or _key(line) not in sent:
                yield line


def lines(batch: Batch, which: str) -> Iterator[bytes]:
    """The batch's finished lines of its ``which`` file (output or error), as JSONL lines."""
    if batch.is_terminal:
        yield from _final(batch, which, set())
        return
    sent: set[bytes] = set()
    side = FILES.index(which)
    for chunk in batch.chunks.order_by("index"):
        for part in parts.recorded(chunk):
            name = parts.names_of(batch.id, chunk.index, part)[side]
            try:
                stream = default_storage.open(name, "rb")
            except FileNotFoundError:
                batch.refresh_from_db()
                if batch.is_terminal:  # finalized meanwhile: the rest is in the file
                    yield from _final(batch, which, sent)
                    return
                continue  # a part finalize found lost: its lines run again
            with stream:
                for line in stream:
                    sent.add(_key(line))
                    yield line
