from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from jobs.models import ApiKey, RegisteredModel
from tests.live import MODELS_CACHE, LiveStack
from tests.s3 import S3Server, use_test_credentials

CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The session's web server answers GET /metrics for this token.
LIVE_METRICS_TOKEN = "live-metrics-token-for-tests-0123"
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--storage",
        choices=("local", "s3"),
        default=os.environ.get("BATCHSITE_TEST_STORAGE", "local"),
        help="Where tests store files: the local default, or S3 (moto's server on loopback); "
        "env BATCHSITE_TEST_STORAGE",
    )


@pytest.fixture(scope="session")
def storage_kind(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--storage"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server for the session (tests/s3.py); started on first use."""
    use_test_credentials()
    server = S3Server(free_port())
    yield server
    server.stop()


@dataclasses.dataclass
class StorageInUse:
    """Where this test's files are: the STORAGES entry, and the environment subprocesses need for it."""

    kind: str
    env: dict[str, str]
    s3: S3Server | None = None
    prefix: str = ""

    def keys(self, settings: Any) -> list[str]:
        if self.s3 is not None:
            return self.s3.keys(self.prefix)
        root = Path(settings.FILES_DIR)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def isolated_storage(settings: Any, tmp_path: Path, storage_kind: str, request: pytest.FixtureRequest) -> StorageInUse:
    """A fresh file store per test, so "nothing was stored" can be checked: a folder, or
    (with --storage s3) a fresh prefix in moto's bucket."""
    settings.FILES_DIR = tmp_path / "files"
    settings.UPLOAD_TMP_DIR = tmp_path / "tmp"
    for directory in (settings.FILES_DIR, settings.UPLOAD_TMP_DIR):
        directory.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(settings.UPLOAD_TMP_DIR)
    if storage_kind == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        prefix = server.new_prefix()
        used = StorageInUse("s3", server.env(prefix), server, prefix)
        default = server.storage(prefix)
    else:
        used = StorageInUse("local", {})
        default = {"BACKEND": "jobs.storage.LocalStorage", "OPTIONS": {"location": str(settings.FILES_DIR)}}
    settings.STORAGES = {**settings.STORAGES, "default": default}
    settings.TEST_STORAGE = used
    return used


@pytest.fixture(autouse=True)
def fresh_plan() -> Iterator[None]:
    """No queue plan (positions, ETAs) cached by an earlier test: it is cached per process."""
    from django.core.cache import caches

    caches["queue_plan"].clear()
    yield
    caches["queue_plan"].clear()


@pytest.fixture
def user(db: Any) -> Any:
    return get_user_model().objects.create_user(username="alice", password="pw-alice-123")


@pytest.fixture
def api_key(user: Any) -> str:
    return ApiKey.generate(user)[1]


@pytest.fixture
def client(api_key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    return api


@pytest.fixture
def other_client(db: Any) -> APIClient:
    bob = get_user_model().objects.create_user(username="bob")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiKey.generate(bob)[1]}")
    return api


@pytest.fixture
def staff(db: Any) -> Any:
    """A browser signed in to the admin as a superuser (the admin pages' tests)."""
    from django.http import HttpRequest
    from django.test import Client

    get_user_model().objects.create_superuser("admin", "admin@example.test", "pw-admin-123")
    browser = Client()
    assert browser.login(request=HttpRequest(), username="admin", password="pw-admin-123")
    return browser


@pytest.fixture
def models(db: Any) -> None:
    """Registry rows for the demo models (no engine is loaded by API tests)."""
    RegisteredModel.objects.create(name=CHAT_MODEL, source="/models/smollm2", endpoints=["chat", "completions"])
    RegisteredModel.objects.create(name=EMBED_MODEL, source="/models/minilm", endpoints=["embeddings"])


def chat_line(i: int, model: str = CHAT_MODEL, **overrides: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"Say {i}"}], "max_tokens": 8},
    }
    line.update(overrides)
    return line


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((ln if isinstance(ln, bytes) else json.dumps(ln).encode()) + b"\n" for ln in lines)


@pytest.fixture
def upload(client: APIClient) -> Callable[..., dict[str, Any]]:
    def do(content: bytes, name: str = "input.jsonl", api: APIClient | None = None) -> dict[str, Any]:
        f = io.BytesIO(content)
        f.name = name
        response = (api or client).post("/v1/files", {"file": f, "purpose": "batch"}, format="multipart")
        assert response.status_code == 200, response.content
        return response.json()

    return do


def create_batch(api: APIClient, upload: Callable[..., dict[str, Any]], lines: list[Any], **extra: Any) -> str:
    """Upload ``lines`` as ``api``'s user and create a chat batch of them (``extra``: more create
    fields); the batch's id."""
    file = upload(jsonl(lines), api=api)
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
    response = api.post("/v1/batches", body, format="json")
    assert response.status_code == 200, response.content
    return str(response.json()["id"])


@pytest.fixture
def limits(settings: Any) -> Callable[..., None]:
    """Override some of settings.BATCHSITE for one test."""

    def set_limits(**changes: Any) -> None:
        settings.BATCHSITE = dataclasses.replace(settings.BATCHSITE, **changes)

    return set_limits


def stored_files(settings: Any) -> list[str]:
    """Every stored file and every file in the upload temp dir (to prove nothing was left)."""
    temp = [str(p) for p in Path(settings.UPLOAD_TMP_DIR).rglob("*") if p.is_file()]
    return settings.TEST_STORAGE.keys(settings) + temp


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_url() -> str:
    """A URL for the test database, for server and worker subprocesses."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


class LiveServer:
    def __init__(self, url: str, process: Any, data_dir: Path, storage: StorageInUse) -> None:
        self.url, self.process, self.data_dir = url, process, data_dir
        self.storage = storage  # where its files are (its data dir, or its own prefix in the test bucket)

    @property
    def server_pid(self) -> int:
        """The process that runs Django (waitress is one process; its children are validators)."""
        return int(self.process.pid)


def wait_serving(url: str, process: Any, why: Any, timeout: float = 60) -> None:
    """Until the web server at ``url`` answers (its 401 to a keyless GET /v1/models); raise
    RuntimeError with ``why`` (a message, or a callable giving one) if it exits or is too slow."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2)
        except urllib.error.HTTPError:
            return  # 401: it is up
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(why() if callable(why) else why) from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def live_server_process(
    django_db_setup: Any,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    storage_kind: str,
    request: pytest.FixtureRequest,
) -> Any:
    """batchsite.serve (waitress, as bin/start runs it) serving the test database on loopback:
    a real server process, one per session."""
    import subprocess
    import sys

    port = free_port()
    data_dir = tmp_path_factory.mktemp("server-data")
    if storage_kind == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        prefix = server.new_prefix("live")
        storage = StorageInUse("s3", server.env(prefix), server, prefix)
    else:
        storage = StorageInUse("local", {})
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "BATCHSITE_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "batchsite.settings",
        "BATCHSITE_METRICS_TOKEN": LIVE_METRICS_TOKEN,
        # As bin/start and docs/OPERATING.md run the server: without it, whichever of its threads
        # first touches the object store keeps its own malloc arena, and RSS varies by thread.
        "MALLOC_ARENA_MAX": "2",
        **storage.env,
    }
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "batchsite.serve", "--bind", f"127.0.0.1:{port}", "--threads", "4"],
        cwd=root,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_serving(url, process, "batchsite.serve did not start")
    yield LiveServer(url, process, data_dir, storage)
    process.terminate()
    process.wait(timeout=30)


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def slow_finalize(monkeypatch: Any) -> Any:
    """``slow_finalize(seconds)``: finalize holds its assembled files that long before publishing."""
    from jobs.services import results
    from tests.faults import hooks

    def slow(seconds: float) -> None:
        monkeypatch.setattr(results, "_publish", hooks.slowed(results._publish, seconds))

    return slow


def subprocess_env(settings: Any, data_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for a manage.py subprocess that shares this test's database and files
    (or, with ``data_dir``, a live server's files)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "BATCHSITE_DATA_DIR": str(data_dir or Path(settings.FILES_DIR).parent),
        "DJANGO_SETTINGS_MODULE": "batchsite.settings",
        **settings.TEST_STORAGE.env,
    }
    env.update(extra)
    if any(name.startswith("FAULT_") for name in extra):
        # tests/faults/sitecustomize.py installs the faults in the child (see tests/faults).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests" / "faults"), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The demo chat model as a safetensors folder, converted once and cached across sessions."""
    from jobs.engine import demo

    path = MODELS_CACHE / demo.SMOLLM2_DIRNAME
    demo.convert_smollm2(path)
    return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from jobs.engine import demo

    return demo.minilm_dir()


@pytest.fixture(scope="session")
def live_stack(live_server_process: Any, smollm2_dir: Path, minilm_path: Path) -> Iterator[LiveStack]:
    """The session's web server plus one real run_gpu_worker (vLLM on the CPU): see tests/live.py."""
    stack = LiveStack.start(live_server_process, ROOT)
    yield stack
    stack.stop()


@pytest.fixture
def stack(
    live_stack: LiveStack, transactional_db: Any, settings: Any, smollm2_dir: Path, minilm_path: Path
) -> LiveStack:
    """The live stack for one test: demo models registered, this process reading the stack's files."""
    live_stack.check_alive()
    live_stack.register_demo_models(smollm2_dir, minilm_path)
    live_stack.point_storage(settings)
    return live_stack


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests on the shared live stack run last, together: its worker stays up
    # between them (so each model loads once per session), and by then no other
    # test has batches its worker could claim. They load real models: engine tests.
    for item in items:
        if "live_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.engine)
    items.sort(key=lambda item: "live_stack" in getattr(item, "fixturenames", ()))


def start_worker(settings: Any, *args: str, data_dir: Path | None = None, stderr: Any = None, **env: str) -> Any:
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "manage.py", "run_gpu_worker", *args],
        cwd=ROOT,
        env=subprocess_env(settings, data_dir, **env),
        stderr=stderr,
    )


# The housekeeper's jobs that end batches (jobs.housekeeper.standard_jobs).
ENDING_JOBS = ("expire overdue batches", "finish stranded batches")


def housekeeper_pass() -> None:
    """One pass of the housekeeper's jobs that end batches (a cancel with nothing running,
    an expiry, a stranded finalize), in this process: it sees the test's own transaction,
    which a ``run_housekeeper`` process would not (run_housekeeper_once runs every job in one)."""
    import threading

    from jobs.housekeeper import standard_jobs

    jobs = [job for job in standard_jobs("test-housekeeper", threading.Event()) if job.name in ENDING_JOBS]
    assert len(jobs) == len(ENDING_JOBS), "a job was renamed: update ENDING_JOBS"
    for job in jobs:
        job.run()


def run_housekeeper_once(settings: Any, data_dir: Path | None = None, **env: str) -> None:
    """One pass of every housekeeper job, in a real ``manage.py run_housekeeper --once`` (with
    ``data_dir`` and the server's storage env: on a live server's files)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "manage.py", "run_housekeeper", "--once"],
        cwd=ROOT,
        env=subprocess_env(settings, data_dir, **env),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
