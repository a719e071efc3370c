"""Whether the next model may load while the previous engine's processes exit.

A swap is the old engine's shutdown (2-3 s here: its processes exit and hand
their memory back) and then the next load. Starting the load at once and
reaping the old processes in the background saves the first part, but for a
while both engines hold memory. So it is done only when the memory allows it,
decided from what was measured, not assumed:

* CPU: the loaded engine's footprint is the resident memory of its processes
  (measured at load and again at the swap, as its KV cache pages in). The next
  model needs what it measured when this process last loaded it, or else the
  largest footprint measured so far (models of one fleet are of a size; the
  margin covers the rest). Overlap if the host's available memory covers that
  with a margin.
* GPU: never. vLLM sizes an engine from the device's free memory when it
  starts and asserts, while it profiles, that no other process released device
  memory meanwhile ("Error in memory profiling ... other processes sharing the
  same container release GPU memory", vllm/v1/worker/gpu_worker.py): the old
  engine's exit during the new one's start would fail the load. The swap waits
  for the old processes there, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

# Room kept free beyond the expected footprint: the old engine's memory is still
# counted as used until it exits, and a load peaks above its settled footprint.
MARGIN = 1.25
HEADROOM_BYTES = 1 << 30


def expected_footprint(name: str, measured: Mapping[str, int]) -> int | None:
    """Bytes the model ``name`` is expected to take once loaded; None if nothing was measured."""
    if name in measured:
        return measured[name]
    return max(measured.values(), default=None)


def may_overlap(gpu: bool, expected: int | None, available: int) -> tuple[bool, str]:
    """(overlap?, why) for a swap to a model expected to take ``expected`` bytes."""
    if gpu:
        return False, "GPU: vLLM's start-up memory profiling must not see another engine release memory"
    if expected is None:
        return False, "no footprint measured yet"
    needed = int(expected * MARGIN) + HEADROOM_BYTES
    if available < needed:
        return False, f"{available / 2**30:.1f} GiB available, {needed / 2**30:.1f} GiB needed beside the old engine"
    return True, f"{available / 2**30:.1f} GiB available, {needed / 2**30:.1f} GiB needed"


def footprint(pids: Iterable[int]) -> int:
    """Resident bytes of these processes (those that exited count nothing)."""
    import psutil

    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)
