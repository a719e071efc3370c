from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import caches


@pytest.fixture
def scheduler(settings: Any) -> Callable[..., None]:
    """Override some of settings.BATCHSITE_SCHEDULER for one test."""

    def set_scheduler(**changes: Any) -> None:
        settings.BATCHSITE_SCHEDULER = dataclasses.replace(settings.BATCHSITE_SCHEDULER, **changes)

    return set_scheduler


@pytest.fixture(autouse=True)
def fresh_plan() -> Iterator[None]:
    """No queue plan cached by an earlier test."""
    caches["queue_plan"].clear()
    yield
    caches["queue_plan"].clear()
