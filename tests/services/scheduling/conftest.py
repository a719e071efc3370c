from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def scheduler(settings: Any) -> Callable[..., None]:
    """Override some of settings.BATCHSITE_SCHEDULER for one test."""

    def set_scheduler(**changes: Any) -> None:
        settings.BATCHSITE_SCHEDULER = dataclasses.replace(settings.BATCHSITE_SCHEDULER, **changes)

    return set_scheduler
