"""The top frames of a py-spy profile, as a Markdown table.

    .venv/bin/python bench/profile_top.py PROFILE.txt [--top 15] [--process worker]

PROFILE.txt is ``py-spy record --format raw`` output (collapsed stacks, one
``frame;frame;... count`` per line; with ``--subprocesses`` the first frame
names the process). "self" is the share of samples in which the frame was the
one running; "total" the share in which it was anywhere on the stack (each
frame counted once per sample). Shares are of the samples of that process.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LOCATION = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?):?(?P<line>\d*)\)$")


def frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``module.py:func`` (lines dropped, so a
    function's samples add up whichever line was running)."""
    match = _LOCATION.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    parts = path.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    elif len(parts) > 2:
        parts = parts[-2:]
    return f"{'/'.join(parts)}:{match['func']}"


def load(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    """Stacks per process (``all`` when the profile has one process)."""
    by_process: dict[str, list[tuple[list[str], int]]] = {}
    for raw in path.read_text().splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        process = "all"
        # py-spy nests a child's stacks under its parents' process frames: the last one is its own.
        while frames and frames[0].startswith("process "):
            process = _process_name(frames[0])
            frames = frames[1:]
        by_process.setdefault(process, []).append(([frame_name(f) for f in frames], int(count)))
    return by_process


def _process_name(frame: str) -> str:
    text = frame.lower()
    if "enginecore" in text or "engine_core" in text:
        return "engine core"
    if "vllm::worker" in text or "spawn_main" in text:
        return "engine worker"
    if "validation_child" in text:
        return "validation child"
    if "gunicorn" in text:
        return "gunicorn"
    if "run_gpu_worker" in text:
        return "worker"
    return frame.split(":", 1)[0]


def top(stacks: list[tuple[list[str], int]], n: int) -> list[tuple[str, float, float]]:
    total = sum(count for _, count in stacks) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    ranked = sorted(inclusive, key=lambda k: (-own[k], -inclusive[k]))[:n]
    return [(name, 100 * own[name] / total, 100 * inclusive[name] / total) for name in ranked]


def table(path: Path, n: int, process: str | None = None) -> str:
    lines = []
    for name, stacks in sorted(load(path).items()):
        if process and name != process:
            continue
        samples = sum(count for _, count in stacks)
        lines += [f"{path.name}, {name}: {samples} samples", "", "| frame | self % | total % |", "| --- | --- | --- |"]
        lines += [f"| `{frame}` | {own:.1f} | {incl:.1f} |" for frame, own, incl in top(stacks, n)]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--process")
    args = parser.parse_args()
    for path in args.profiles:
        print(table(path, args.top, args.process))


if __name__ == "__main__":
    main()
