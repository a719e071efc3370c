"""What the chaos run starts and kills: processes under bin/supervise, each in its own session.

Every process gets BATCHSITE_CHAOS_RUN=<token> in its environment, so after
shutdown the run finds anything it started that is still alive, whatever its
parent now is, by reading /proc/*/environ; and it only ever kills pids it
found under its own supervisors, never a process by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, REPO

MARKER = "BATCHSITE_CHAOS_RUN"


def children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """``pid``'s children, theirs, and so on (a process that ends meanwhile is skipped)."""
    out, todo = [], children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children(child)
    return out


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def marked(token: str, exclude: set[int] | None = None) -> list[dict[str, Any]]:
    """Every live process whose environment carries this run's marker."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (exclude or set()):
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append({"pid": int(entry), "cmd": " ".join(command_line(int(entry)))[:200]})
    return found


class Supervised:
    """One ``bin/supervise COMMAND`` in a new session; ``kill()`` SIGKILLs what it supervises."""

    def __init__(self, kind: str, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.kind, self.name, self.cmd = kind, name, cmd
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [str(REPO / "bin" / "supervise"), *cmd],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.kills = 0

    def target(self) -> int | None:
        """The supervised command's pid (not the back-off ``sleep`` between starts); None between starts."""
        for pid in children(self.process.pid):
            cmd = command_line(pid)
            if cmd and Path(cmd[0]).name != "sleep":
                return pid
        return None

    def kill(self) -> list[int]:
        """SIGKILL the command and every process under it at once (a crash of the whole
        tree: a gunicorn master with its workers); the supervisor starts it again."""
        pid = self.target()
        if pid is None:
            return []
        tree = [pid, *descendants(pid)]
        for each in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        self.kills += 1
        return tree

    def restarts(self) -> int:
        return self._log_text().count("; starting it again in ")

    def _log_text(self) -> str:
        with contextlib.suppress(OSError):
            return Path(self._log.name).read_text(errors="replace")
        return ""

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # supervise passes it on and exits after the command

    def wait(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout=max(0.1, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False

    def force(self) -> None:
        """SIGKILL the whole session (the supervisor and all it started), for a shutdown that hung."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()


def shutdown(processes: list[Supervised], timeout: float = 90) -> list[str]:
    """SIGTERM every supervisor; those still running after ``timeout`` are killed. Their names."""
    for each in processes:
        each.terminate()
    deadline = time.monotonic() + timeout
    hung = [each.name for each in processes if not each.wait(deadline - time.monotonic())]
    for each in processes:
        each.force()
    return hung


def web_cmd(port: int) -> list[str]:
    # As bin/start runs it (two workers, four threads each), on its own port.
    return ["env", "MALLOC_ARENA_MAX=2", PYTHON, "-m", "gunicorn", "batchsite.wsgi", "--bind", f"127.0.0.1:{port}"] + [
        "--workers",
        "2",
        "--threads",
        "4",
        "--timeout",
        "300",
        "--log-level",
        "warning",
    ]


# The SIMULATED engine (jobs/engine/simulated.py): the chaos run is about the queue, files and
# webhooks surviving kills, not about inference.
SIM_ENGINE = ["--engine", "jobs.engine.simulated.SimulatedEngine"]


def worker_cmd() -> list[str]:
    return [PYTHON, "manage.py", "run_gpu_worker", *SIM_ENGINE, "--device", "cpu"]


def keeper_cmd() -> list[str]:
    return [PYTHON, "manage.py", "run_housekeeper"]


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout
