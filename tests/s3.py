"""An S3-compatible server for the tests: moto's server mode on loopback, one per session.

It runs in a thread of the test process (ThreadedMotoServer, a real HTTP
server), so the test process, gunicorn and workers all reach it over HTTP with
boto3, and it is not a child process that tests measuring their process tree
would count (the objects it holds can be a few hundred MB). Every test gets a
fresh key prefix in one bucket, so "nothing was stored" and "only these
objects" can be checked by listing that prefix.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

BUCKET = "batchsite-test"
# moto accepts any credentials; these keep boto3 from looking for real ones.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self, port: int) -> None:
        from moto.server import ThreadedMotoServer

        self.endpoint = f"http://127.0.0.1:{port}"
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
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
        self.server.stop()


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
