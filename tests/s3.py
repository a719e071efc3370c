"""An S3-compatible server for the tests: moto's server mode on loopback, one per session.

It runs as its own process (``moto.server``), as a real object store would, so
the test process, gunicorn and workers all reach it over HTTP with boto3, and
its CPU does not count against the process a test measures. Every test gets a
fresh key prefix in one bucket, so "nothing was stored" and "only these
objects" can be checked by listing that prefix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

BUCKET = "batchsite-test"
# moto accepts any credentials; these keep boto3 from looking for real ones.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self, port: int, log_path: Path) -> None:
        self.endpoint = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from moto.server import main; main(sys.argv[1:])"]
                + ["-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start:\n{log_path.read_text()}") from None
                time.sleep(0.2)
        self.client().create_bucket(Bucket=BUCKET)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())

    @staticmethod
    def new_prefix(label: str = "t") -> str:
        return f"{label}-{uuid.uuid4().hex[:12]}"

    def keys(self, prefix: str) -> list[str]:
        """Every object under ``prefix``, relative to it."""
        paginator = self.client().get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix + "/"):
            found += [item["Key"][len(prefix) + 1 :] for item in page.get("Contents", [])]
        return sorted(found)

    def storage(self, prefix: str) -> dict[str, Any]:
        """A STORAGES["default"] entry on this server under ``prefix``."""
        return {
            "BACKEND": "jobs.storage.S3Storage",
            "OPTIONS": {"bucket_name": BUCKET, "location": prefix, "endpoint_url": self.endpoint},
        }

    def env(self, prefix: str) -> dict[str, str]:
        """What a gunicorn or worker subprocess needs to use this server under ``prefix``."""
        return {"BATCHSITE_STORAGE": f"s3://{BUCKET}/{prefix}", "AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def use_test_credentials() -> None:
    """This process's boto3 (django-storages' S3Storage in the test process) talks to moto."""
    for key, value in CREDENTIALS.items():
        os.environ[key] = value
