"""What an estimate costs: the token-counting child (jobs/engine/token_count.py) on N lines.

Runs the child exactly as POST /v1/batches/estimate does (header line, then the JSONL on
stdin, running totals on stdout) and reports its start-up (import vLLM, build the render
pipeline: until its first totals line, less the lines counted by then) and its per-line
rate; the cost per 10,000 lines is start-up + 10,000 lines. The validation pass before it
is the ingest benchmark's (bench/ingest.py).

    .venv/bin/python bench/estimate_cost.py --model demo --lines 10000 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PYTHON, REPO, chat_lines, embedding_lines, emit, model_spec, table  # noqa: E402


def run(kind: str, n: int) -> dict[str, object]:
    spec = model_spec(kind)
    url = "/v1/embeddings" if kind == "minilm" else "/v1/chat/completions"
    lines = embedding_lines(n, spec.name) if kind == "minilm" else chat_lines(n, spec.name)
    header = {"name": spec.name, "source": spec.source, "endpoints": list(spec.endpoints)}
    header |= {"engine_options": spec.engine_options, "url": url}
    payload = (json.dumps(header) + "\n" + "".join(json.dumps(line) + "\n" for line in lines)).encode()
    started = time.monotonic()
    child = subprocess.Popen(
        [PYTHON, "-m", "jobs.engine.token_count"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert child.stdin is not None and child.stdout is not None
    import threading

    threading.Thread(target=lambda: (child.stdin.write(payload), child.stdin.close()), daemon=True).start()  # type: ignore[union-attr]
    first_at, first_lines, last = None, 0, {}
    for raw in child.stdout:
        last = json.loads(raw)
        if first_at is None:
            first_at, first_lines = time.monotonic() - started, int(last["requests"])
        if last.get("done"):
            break
    total = time.monotonic() - started
    child.wait()
    assert first_at is not None and last.get("done") and last["requests"] == n, last
    per_line = (total - first_at) / max(1, n - first_lines)
    startup = first_at - first_lines * per_line
    return {
        "model": kind,
        "lines": n,
        "prompt_tokens": last["prompt_tokens"],
        "startup_s": round(startup, 2),
        "ms_per_line": round(per_line * 1000, 3),
        "seconds": round(total, 2),
        "per_10k_lines_s": round(startup + 10_000 * per_line, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["demo", "tiny", "minilm"], action="append")
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [run(kind, args.lines) for kind in args.model or ["demo", "minilm"]]
    print(table(rows, list(rows[0])))
    emit({"rows": rows}, args.json)


if __name__ == "__main__":
    main()
