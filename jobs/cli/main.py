"""The commands of ``bin/batchsite``: submit, status, list, cancel, wait, download, retry.

Messages go to stderr and the one thing a script wants (a batch id, a status
line, a table) to stdout, so ``ID=$(bin/batchsite submit in.jsonl --model M)`` works.
Errors from the server are printed as the server worded them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobs.cli import progress
from jobs.cli.progress import INTERRUPTED, NOT_COMPLETED, OK, TERMINAL

RETRY_FILTERS = ("all", "failed", "cancelled", "expired")
# How the user ran us (bin/batchsite sets it), for the commands we suggest.
PROG = os.environ.get("BATCHSITE_PROG") or "batchsite"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class UsageError(Exception):
    """A bad argument found after parsing (a file that is not there, a bad k=v)."""


# ---------------------------------------------------------------- the client
def make_client(args: argparse.Namespace) -> Any:
    import openai

    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL") or None
    if base_url and urlsplit(base_url).path in ("", "/"):
        base_url = base_url.rstrip("/") + "/v1"  # "http://host:8000" means its API
    return openai.OpenAI(base_url=base_url, api_key=args.api_key or None, timeout=args.timeout)


def api_message(exc: Any) -> str:
    """The server's own error message, with its status and code."""
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    status = getattr(exc, "status_code", None)
    detail = ", ".join(str(x) for x in (f"HTTP {status}" if status else None, getattr(exc, "code", None)) if x)
    return f"{message or exc}" + (f" ({detail})" if detail else "")


# ---------------------------------------------------------------- submit
def parse_metadata(pairs: Sequence[str]) -> dict[str, str] | None:
    metadata = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--metadata {pair!r}: expected KEY=VALUE")
        metadata[key] = value
    return metadata or None


def first_url(path: Path) -> str | None:
    with path.open("rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    url = json.loads(raw).get("url")
                except (ValueError, AttributeError):
                    return None
                return url if isinstance(url, str) else None
    return None


def with_model(path: Path, model: str) -> Path | None:
    """A copy of the input where lines without body.model get ``model``; None if none lacked it.

    Lines that are not valid requests are copied unchanged, so the server's
    validation reports them with their line numbers.
    """
    changed = False
    fd, tmp = tempfile.mkstemp(prefix="batchsite-", suffix=".jsonl")
    with path.open("rb") as src, os.fdopen(fd, "wb") as out:
        for raw in src:
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            body = line.get("body") if isinstance(line, dict) else None
            if isinstance(body, dict) and "model" not in body:
                body["model"] = model
                raw = json.dumps(line, ensure_ascii=False).encode() + b"\n"
                changed = True
            out.write(raw)
    if not changed:
        os.unlink(tmp)
        return None
    return Path(tmp)


def cmd_submit(client: Any, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    endpoint = args.endpoint or first_url(path) or "/v1/chat/completions"
    upload = with_model(path, args.model) if args.model else None
    try:
        with (upload or path).open("rb") as fh:
            file = client.files.create(file=(path.name, fh), purpose="batch")
    finally:
        if upload is not None:
            upload.unlink()
    say(f"uploaded {path} as {file.id} ({file.bytes} bytes)")
    options: dict[str, Any] = {}
    if args.output_expires_after:
        options["output_expires_after"] = {"anchor": "created_at", "seconds": args.output_expires_after}
    if args.webhook_url:
        options["extra_body"] = {"webhook_url": args.webhook_url}  # batchsite's extension
    batch = client.batches.create(
        input_file_id=file.id,
        endpoint=endpoint,
        completion_window=args.completion_window,
        metadata=parse_metadata(args.metadata),
        **options,
    )
    print(batch.id, flush=True)
    return follow(client, batch, args)


def follow(client: Any, batch: Any, args: argparse.Namespace) -> int:
    """After a create: report, and with --wait, wait and download."""
    if batch.status == "failed":
        return report_end(client, batch, args)
    say(f"batch {batch.id}: {progress.describe(batch)}")
    if not args.wait:
        say(f"follow it with: {PROG} wait {batch.id}")
        return OK
    return wait_and_download(client, batch.id, args)


# ---------------------------------------------------------------- waiting
def wait_and_download(client: Any, batch_id: str, args: argparse.Namespace) -> int:
    try:
        batch = progress.wait(client, batch_id, args.poll)
    except KeyboardInterrupt:
        say(
            f"\nStopped waiting; batch {batch_id} keeps running on the server.\n"
            f"Resume with: {PROG} wait {batch_id}   (or stop it: {PROG} cancel {batch_id})"
        )
        return INTERRUPTED
    return report_end(client, batch, args)


def report_end(client: Any, batch: Any, args: argparse.Namespace) -> int:
    say(f"batch {batch.id}: {progress.describe(batch)}")
    for error in (batch.errors.data if batch.errors and batch.errors.data else [])[:100]:
        where = f"line {error.line}: " if error.line else ""
        say(f"  {where}{error.message} ({error.code})")
    download(client, batch, getattr(args, "output", None), getattr(args, "errors", None))
    return OK if batch.status == "completed" else NOT_COMPLETED


def download(client: Any, batch: Any, output: str | None, errors: str | None) -> None:
    for file_id, path, what in (
        (batch.output_file_id, output or f"{batch.id}_output.jsonl", "output"),
        (batch.error_file_id, errors or f"{batch.id}_error.jsonl", "errors"),
    ):
        if file_id:
            client.files.content(file_id).write_to_file(path)
            say(f"{what}: {path}")


# ---------------------------------------------------------------- the rest
def cmd_status(client: Any, args: argparse.Namespace) -> int:
    batch = client.batches.retrieve(args.batch_id)
    if args.json:
        print(batch.model_dump_json(indent=2))
        return OK
    print(f"{batch.id}: {progress.describe(batch)}")
    for name in ("endpoint", "model", "input_file_id", "output_file_id", "error_file_id"):
        value = getattr(batch, name, None)
        if value:
            print(f"  {name}: {value}")
    if batch.metadata:
        print(f"  metadata: {json.dumps(batch.metadata, ensure_ascii=False)}")
    return OK


def when(timestamp: int | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M") if timestamp else "-"


def cmd_list(client: Any, args: argparse.Namespace) -> int:
    page = client.batches.list(limit=args.limit)
    rows = list(page.data)
    if args.json:
        print(json.dumps([b.model_dump() for b in rows], indent=2))
        return OK
    for batch in rows:
        counts = batch.request_counts
        done = f"{counts.completed + counts.failed}/{counts.total}" if counts else "-"
        print(f"{batch.id}  {batch.status:<11} {done:>13}  {when(batch.created_at)}  {batch.endpoint}")
    if not rows:
        say("no batches")
    return OK


def cmd_cancel(client: Any, args: argparse.Namespace) -> int:
    batch = client.batches.cancel(args.batch_id)
    print(f"{batch.id}: {batch.status}")
    return OK


def cmd_wait(client: Any, args: argparse.Namespace) -> int:
    return wait_and_download(client, args.batch_id, args)


def download_partial(client: Any, batch: Any, output: str | None, errors: str | None) -> None:
    """The lines finished so far (batchsite's extension, GET /v1/batches/{id}/results)."""
    import httpx

    for which, path, what in (
        ("output", output or f"{batch.id}_output_so_far.jsonl", "output so far"),
        ("error", errors or f"{batch.id}_error_so_far.jsonl", "errors so far"),
    ):
        # The SDK has no method for it; its client sends the request (auth, retries) and
        # hands back the raw response, streamed to the file as it arrives.
        response = client.get(
            f"/batches/{batch.id}/results", cast_to=httpx.Response, options={"params": {"file": which}}, stream=True
        )
        lines = 0
        with open(path, "wb") as out:
            for block in response.iter_bytes():
                out.write(block)
                lines += block.count(b"\n")
        response.close()
        say(f"{what}: {path} ({lines} lines)")


def cmd_download(client: Any, args: argparse.Namespace) -> int:
    batch = client.batches.retrieve(args.batch_id)
    if args.partial and batch.status not in TERMINAL:
        download_partial(client, batch, args.output, args.errors)
        return OK
    if not batch.output_file_id and not batch.error_file_id:
        say(f"batch {batch.id} has no results yet ({progress.describe(batch)})")
        return OK if batch.status not in TERMINAL else NOT_COMPLETED
    download(client, batch, args.output, args.errors)
    return OK


def cmd_retry(client: Any, args: argparse.Namespace) -> int:
    from openai.types import Batch

    # batchsite's extension; the SDK has no method for it, but its client posts and parses.
    batch = client.post(f"/batches/{args.batch_id}/retry", body={"filter": args.filter}, cast_to=Batch)
    print(batch.id, flush=True)
    return follow(client, batch, args)


# ---------------------------------------------------------------- arguments
def add_wait_options(parser: argparse.ArgumentParser, wait_flag: bool = True) -> None:
    if wait_flag:
        parser.add_argument("--wait", action="store_true", help="wait with a progress bar, then download")
    parser.add_argument("--output", metavar="PATH", help="where to write the output file (default BATCH_output.jsonl)")
    parser.add_argument("--errors", metavar="PATH", help="where to write the error file (default BATCH_error.jsonl)")
    parser.add_argument("--poll", type=float, default=2.0, metavar="SECONDS", help="how often to ask (default 2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Submit and follow OpenAI-style batches on batchsite (or OpenAI).",
        epilog="Exit status: 0 done, 1 the batch did not complete or the server refused, "
        "2 bad arguments, 130 interrupted (the batch keeps running).",
    )
    parser.add_argument("--base-url", help="API root, e.g. http://host:8000/v1 (default: $OPENAI_BASE_URL)")
    parser.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="upload a JSONL file and create a batch")
    submit.add_argument("file", metavar="FILE")
    submit.add_argument("--model", help="model for lines whose body has none")
    submit.add_argument("--endpoint", help="default: the first line's url")
    submit.add_argument("--completion-window", default="24h")
    submit.add_argument("--webhook-url", help="POSTed to when the batch ends (batchsite)")
    submit.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument(
        "--output-expires-after", type=int, metavar="SECONDS", help="the output and error files expire after this"
    )
    add_wait_options(submit)
    submit.set_defaults(run=cmd_submit)

    for name, run, text in (
        ("status", cmd_status, "show a batch"),
        ("cancel", cmd_cancel, "cancel a batch"),
        ("wait", cmd_wait, "wait for a batch with a progress bar, then download its results"),
        ("download", cmd_download, "download a batch's output and error files"),
        ("retry", cmd_retry, "new batch of the lines that did not succeed (batchsite)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("batch_id", metavar="ID")
        sub.set_defaults(run=run)
        if name == "status":
            sub.add_argument("--json", action="store_true", help="the whole batch object")
        elif name == "wait":
            add_wait_options(sub, wait_flag=False)
        elif name == "download":
            sub.add_argument("--output", metavar="PATH")
            sub.add_argument("--errors", metavar="PATH")
            sub.add_argument(
                "--partial", action="store_true", help="while it runs: the lines finished so far (an extension)"
            )
        elif name == "retry":
            sub.add_argument("--filter", choices=RETRY_FILTERS, default="all", help="which failed lines (default all)")
            add_wait_options(sub)

    batches = commands.add_parser("list", help="list recent batches")
    batches.add_argument("--limit", type=int, default=20)
    batches.add_argument("--json", action="store_true")
    batches.set_defaults(run=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import openai

    try:
        return int(args.run(make_client(args), args))
    except UsageError as exc:
        say(f"batchsite: {exc}")
        return 2
    except openai.APIStatusError as exc:
        say(f"batchsite: {api_message(exc)}")
        return NOT_COMPLETED
    except openai.APIConnectionError as exc:
        say(f"batchsite: cannot reach the server: {exc}")
        return NOT_COMPLETED
    except openai.OpenAIError as exc:  # no API key, and the like
        say(f"batchsite: {exc}")
        return 2
    except KeyboardInterrupt:
        say("\ninterrupted")
        return INTERRUPTED
