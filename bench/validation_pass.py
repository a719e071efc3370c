"""The validation pass alone, in this process: no server, no upload, no child process.

    .venv/bin/python bench/validation_pass.py --lines 200000

Times ``validation.validate_input`` on the ingest bench's file (lines of exactly 1,000 bytes)
against bare loops that only parse the same lines (``json.loads``, ``orjson.loads``), best of
three each, alternating, so a noisy neighbour hurts all alike. What bench/ingest.py's
``create_s`` holds beyond this is the child's start, the copy to it, and the database.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchsite.env import Reader, read_limits  # noqa: E402
from bench.common import emit, table  # noqa: E402
from bench.ingest import MODEL, bare_parse, make_file  # noqa: E402
from jobs.services.validation import Catalog, validate_input  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    limits = read_limits(Reader({"BATCHSITE_MAX_REQUESTS_PER_BATCH": str(args.lines)}))
    catalog = Catalog({"/v1/chat/completions": "chat"}, {MODEL: ("chat",)})
    with tempfile.TemporaryDirectory() as tmp:
        path = make_file(Path(tmp) / "in.jsonl", args.lines)
        best = {"validate": float("inf"), "json": float("inf"), "orjson": float("inf")}
        for _ in range(3):
            started = time.perf_counter()
            with path.open("rb") as fh:
                result = validate_input(fh, None, None, limits, catalog)
            best["validate"] = min(best["validate"], time.perf_counter() - started)
            assert result.ok and result.total == args.lines, result.errors
            best["json"] = min(best["json"], bare_parse(path, json.loads))
            best["orjson"] = min(best["orjson"], bare_parse(path, orjson.loads))
    row = {
        "lines": args.lines,
        "validate_s": best["validate"],
        "bare_json_s": best["json"],
        "bare_orjson_s": best["orjson"],
        "vs_json": best["json"] / best["validate"],
        "vs_orjson": best["orjson"] / best["validate"],
    }
    print(table([row], list(row)))
    emit({"rows": [row]}, args.json)


if __name__ == "__main__":
    main()
