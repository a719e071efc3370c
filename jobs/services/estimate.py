"""What a batch of a file would cost and when it would end, before it is submitted.

``POST /v1/batches/estimate`` (an extension) and the submit page's estimate.
The file is validated as a create would (same rules, same refusals), then its
prompt tokens are counted by the model's own renderer in a child process
(``jobs.engine.token_count``: vLLM's tokenizer and chat template, no weights),
which is given BATCHSITE_ESTIMATE_SECONDS: past that the answer says how many
lines were counted and scales the count to the whole file, rather than keep a
request thread for as long as a 200 MB file takes. The times come from the
same queue simulation that gives a submitted batch its position and ETA.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import orjson
from django.conf import settings

from jobs.errors import InvalidRequest
from jobs.models import File, RegisteredModel
from jobs.services import files as file_service
from jobs.services import validation_child
from jobs.services.batches import BatchRequest, check_request
from jobs.services.scheduling.estimates import Estimator
from jobs.services.scheduling.plan import what_if
from jobs.services.validation import Catalog

log = logging.getLogger("batchsite.estimate")

_ROOT = Path(__file__).resolve().parents[2]
_BLOCK = 1 << 20


def estimate(
    owner: Any, input_file_id: str, endpoint: str | None, model: str | None, invalid_lines: str = "fail"
) -> dict[str, Any]:
    """``endpoint`` None (the submit page's "from the file's lines"): the lines' own url.
    ``invalid_lines`` as on create: with ``skip``, a file whose only faults are bad lines is
    estimated for its valid lines (the bad ones would go straight to the error file)."""
    check_request(
        BatchRequest(endpoint=endpoint, completion_window=settings.BATCHSITE.completion_windows[0], model=model)
    )
    input_file = file_service.get_owned_file(owner, input_file_id, "input_file_id")
    if input_file.purpose != "batch":
        raise InvalidRequest(
            f"File {input_file.id} has purpose {input_file.purpose!r}; a batch input needs purpose 'batch'.",
            param="input_file_id",
            code="invalid_file_purpose",
        )
    with file_service.open_content(input_file) as fh:
        result = validation_child.validate(fh, input_file.bytes, endpoint, model, settings.BATCHSITE, Catalog.load())
    skipping = invalid_lines == "skip" and not result.ok and result.skippable
    if not result.ok and not skipping:
        first = result.errors[0] if result.errors else {}
        raise InvalidRequest(
            f"This file would make a failed batch ({result.error_count} invalid "
            f"line{'' if result.error_count == 1 else 's'}); the first: "
            f"{first.get('message', 'invalid line')}",
            param="input_file_id",
            code=first.get("code") or "invalid_file",
        )
    name = result.model or model or ""
    endpoint = result.endpoint or endpoint or ""
    entry = RegisteredModel.objects.enabled().get(name=name)  # validation checked it is there
    # The bad lines' file line numbers: they are not fed to the counter (a line refused for its
    # url or a repeated custom_id may still hold a countable body).
    skipped = {int(bad[1]) for bad in result.bad} if skipping else set()
    counted = count_tokens(input_file, entry, endpoint, settings.BATCHSITE.estimate_seconds, skipped)
    requests = result.total - len(skipped)
    complete = counted["done"] and counted["requests"] == requests
    scale = requests / counted["requests"] if counted["requests"] else None

    def scaled(key: str) -> int | None:
        # Nothing counted in time (the renderer could not even start): no number, not 0.
        return counted[key] if complete else None if scale is None else round(counted[key] * scale)

    spr = Estimator.from_database().seconds_per_request(name, None)
    chunks = max(1, math.ceil(requests / settings.BATCHSITE.chunk_size))
    plan = what_if(name, requests, chunks, owner=owner.pk)
    return {
        "object": "batch.estimate",
        "input_file_id": input_file.id,
        "endpoint": endpoint,
        "model": name,
        "requests": requests,
        "skipped_requests": len(skipped),
        "prompt_tokens": scaled("prompt_tokens"),
        "max_output_tokens": scaled("max_output_tokens"),
        # Lines the engine will refuse (past the context, a body vLLM's schema refuses): their
        # tokens are not in prompt_tokens, as their usage will not be in the output.
        "failing_requests": scaled("failing"),
        "counted_requests": counted["requests"],
        "complete": complete,
        "estimated_seconds": round(requests * spr, 1) if spr is not None else None,
        "queue_position": plan.position,
        "estimated_start_time": int(plan.starts_at.timestamp()) if plan.starts_at else None,
        "estimated_completion_time": int(plan.finishes_at.timestamp()) if plan.finishes_at else None,
    }


def count_tokens(
    input_file: File, entry: RegisteredModel, endpoint: str, seconds: float, skipped: set[int] | None = None
) -> dict[str, Any]:
    """The child's last totals after at most ``seconds`` (``done`` false if it had not finished);
    ``skipped``: file line numbers (1-based) not to count."""
    header = {
        "name": entry.name,
        "source": entry.source,
        "endpoints": list(entry.endpoints),
        "engine_options": dict(entry.engine_options),
        "url": endpoint,
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen(
        [sys.executable, "-m", "jobs.engine.token_count"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=_ROOT,
    )
    assert child.stdin is not None and child.stdout is not None
    feeder = threading.Thread(target=_feed, args=(input_file, header, child.stdin, skipped or set()), daemon=True)
    feeder.start()
    last: dict[str, Any] = {"requests": 0, "prompt_tokens": 0, "max_output_tokens": 0, "failing": 0, "done": False}
    reader = threading.Thread(target=_read, args=(child.stdout, last), daemon=True)
    reader.start()
    reader.join(timeout=seconds)
    if reader.is_alive():
        log.info(
            "estimate of %s: counted %d lines in %.0f s, scaling to the file", input_file.id, last["requests"], seconds
        )
    child.kill()
    child.wait()
    reader.join(timeout=5)
    feeder.join(timeout=5)
    return dict(last)


def _feed(input_file: File, header: dict[str, Any], stdin: IO[bytes], skipped: set[int]) -> None:
    try:
        stdin.write(orjson.dumps(header) + b"\n")
        with file_service.open_content(input_file) as fh:
            if skipped:  # line by line, leaving the bad ones out
                for number, line in enumerate(fh, start=1):
                    if number not in skipped:
                        stdin.write(line if line.endswith(b"\n") else line + b"\n")
            else:
                while block := fh.read(_BLOCK):
                    stdin.write(block)
    except (BrokenPipeError, ValueError, OSError):
        pass  # the child was stopped at its bound: what it counted is the answer
    finally:
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            stdin.close()


def _read(stdout: IO[bytes], last: dict[str, Any]) -> None:
    started = time.monotonic()
    for raw in stdout:
        with contextlib.suppress(orjson.JSONDecodeError):
            last.update(orjson.loads(raw))
        if last.get("done"):
            log.info("estimate counted %d lines in %.1f s", last["requests"], time.monotonic() - started)
            return
