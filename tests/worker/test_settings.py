"""The worker's fault-handling settings parse strictly, like every other setting."""

from __future__ import annotations

import pytest

from batchsite.env import EnvError, Reader, read_worker_settings


def test_the_fault_settings_have_laptop_defaults():
    conf = read_worker_settings(Reader({}))
    assert conf.engine_stall_seconds == 300.0
    assert conf.model_load_attempts == 3
    assert conf.model_load_backoff_seconds == 30.0


@pytest.mark.parametrize(
    "name, value",
    [
        ("BATCHSITE_ENGINE_STALL_SECONDS", "0.5"),
        ("BATCHSITE_ENGINE_STALL_SECONDS", "5m"),
        ("BATCHSITE_MODEL_LOAD_ATTEMPTS", "0"),
        ("BATCHSITE_MODEL_LOAD_ATTEMPTS", "2.5"),
        ("BATCHSITE_MODEL_LOAD_BACKOFF_SECONDS", "-1"),
        ("BATCHSITE_MODEL_LOAD_BACKOFF_SECONDS", "\ud800"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name, value):
    with pytest.raises(EnvError, match=name):
        read_worker_settings(Reader({name: value}))
