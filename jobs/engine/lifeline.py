"""Engine processes die with their parent, even when the worker is killed with SIGKILL.

vLLM runs a model in processes of its own (the engine core, which starts workers
of its own), with multiprocessing, forked or spawned. Nothing ties their lives
to the worker's: a worker killed outright cannot shut them down, and they go on
holding the GPU's memory, so the next worker on that GPU cannot load.

``tie_children`` (called by the engine before vLLM starts anything) wraps the
target of every multiprocessing child started from then on: the child first
starts a small thread that kills it as soon as its parent process is gone (its
parent id changes when it is re-parented), then ties its own children the same
way, then runs the target. So the engine core dies within a second of the
worker, and its workers within a second of the engine core, whatever killed it.
The wrapper is pickled with the process object, so it works for spawned
children as well as forked ones.

Why not PR_SET_PDEATHSIG: it fires when the *thread* that started the child
exits, not the process, and vLLM starts its engine core from our engine's
event-loop thread; and it would have to be set inside the child anyway.
"""

from __future__ import annotations

import multiprocessing.process
import os
import signal
import threading
import time
from typing import Any

POLL_SECONDS = 0.5

_original_start: Any = None
_lock = threading.Lock()


class DiesWithParent:
    """A multiprocessing target that watches its parent before it runs (picklable)."""

    def __init__(self, target: Any, parent: int) -> None:
        self.target = target
        self.parent = parent

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        watch_parent(self.parent)
        tie_children()
        return self.target(*args, **kwargs)


def watch_parent(parent: int) -> None:
    """Kill this process as soon as ``parent`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent:  # it died before we got here
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="batchsite-lifeline", daemon=True).start()


def tie_children() -> None:
    """From now on, every multiprocessing child of this process dies with it (idempotent)."""
    global _original_start
    with _lock:
        if _original_start is not None:
            return
        original = _original_start = multiprocessing.process.BaseProcess.start

        def start(self: multiprocessing.process.BaseProcess) -> None:
            target = getattr(self, "_target", None)
            if target is not None and not isinstance(target, DiesWithParent):
                self._target = DiesWithParent(target, os.getpid())  # type: ignore[attr-defined]
            original(self)

        multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign]
