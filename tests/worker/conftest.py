from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def worker_conf(settings: Any) -> Callable[..., None]:
    """Override some of settings.BATCHSITE_WORKER in this (the API's) process for one test;
    worker subprocesses take theirs from the environment."""

    def change(**changes: Any) -> None:
        settings.BATCHSITE_WORKER = dataclasses.replace(settings.BATCHSITE_WORKER, **changes)

    return change
