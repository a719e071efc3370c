"""Big uploads are validated in a child process, so the server's other requests are not starved.

Validating a 200 MB file is seconds of Python. In a thread of a threaded
gunicorn process it holds the GIL all that time but for 5 ms slices, and every
other request of that process (the SDK's pollers) advances one slice at a time:
their p99 went to seconds. The child does the pass while this process only
moves bytes: it reads the file (local disk or object storage, through the
storage API, as any read here) and writes it to the child's stdin in 1 MiB
blocks, and waits on pipes, which releases the GIL.

The child runs ``python -m jobs.services.validation_child``: validation.py's
pass and nothing else, no Django setup and no database (what it needs of the
model registry comes in the header, a ``Catalog``). Small files are validated
in the caller's thread: a child costs about 0.1 s to start. If the child fails
(it cannot start, it dies), the file is validated in the caller's thread after
all, so a child problem never fails an upload that is valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from batchsite.env import Limits
from jobs.errors import InvalidRequest
from jobs.services.validation import Catalog, ValidationResult, too_many_requests, validate_input

log = logging.getLogger("batchsite.validation")

# Files at least this big go to a child (at ~100,000 lines/s, 8 MB is about
# 0.1 s of validation, what starting the child costs).
CHILD_MIN_BYTES = 8 << 20
_BLOCK = 1 << 20
_ROOT = Path(__file__).resolve().parents[2]


class ChildFailed(Exception):
    pass


def validate(
    f: BinaryIO, size: int, endpoint: str | None, model: str | None, limits: Limits, catalog: Catalog
) -> ValidationResult:
    """validate_input, in a child process for a big file. Raises InvalidRequest for breaking a limit."""
    if size < CHILD_MIN_BYTES:
        return validate_input(f, endpoint, model, limits, catalog)
    try:
        return in_child(f, endpoint, model, limits, catalog)
    except ChildFailed as exc:
        log.error("validation in a child process failed (%s); validating in this process instead", exc)
        f.seek(0)
        return validate_input(f, endpoint, model, limits, catalog)


def in_child(
    f: BinaryIO, endpoint: str | None, model: str | None, limits: Limits, catalog: Catalog
) -> ValidationResult:
    header = {
        "endpoint": endpoint,
        "model": model,
        "limits": dataclasses.asdict(limits),
        "catalog": catalog.to_json(),
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=_ROOT
        )
    except OSError as exc:
        raise ChildFailed(f"could not start: {exc}") from exc
    assert child.stdin is not None and child.stdout is not None
    try:
        try:
            child.stdin.write(orjson.dumps(header) + b"\n")
            shutil.copyfileobj(f, child.stdin, _BLOCK)
        except BrokenPipeError:
            pass  # it stopped reading: it has its answer (a broken limit), or it died
        finally:
            with contextlib.suppress(BrokenPipeError):
                child.stdin.close()
        answer = child.stdout.read()
        code = child.wait()
    finally:
        if child.poll() is None:  # this thread was interrupted: leave no child behind
            child.kill()
            child.wait()
        child.stdout.close()
    if code != 0 or not answer:
        raise ChildFailed(f"exit code {code}")
    try:
        data: dict[str, Any] = orjson.loads(answer)
    except orjson.JSONDecodeError as exc:
        raise ChildFailed(f"unreadable answer: {exc}") from exc
    if "too_many_requests" in data:
        raise too_many_requests(int(data["too_many_requests"]))
    return ValidationResult.from_json(data["result"])


def main() -> None:
    stdin = sys.stdin.buffer
    header = orjson.loads(stdin.readline())
    raw = header["limits"]
    limits = Limits(**{**raw, "completion_windows": tuple(raw["completion_windows"])})
    catalog = Catalog.from_json(header["catalog"])
    try:
        result = validate_input(stdin, header["endpoint"], header["model"], limits, catalog)
        answer: dict[str, Any] = {"result": result.to_json()}
    except InvalidRequest:
        answer = {"too_many_requests": limits.max_requests_per_batch}
    sys.stdout.buffer.write(orjson.dumps(answer))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
