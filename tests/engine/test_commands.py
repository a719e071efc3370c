"""The model management commands (no engine is started here)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from jobs.engine import demo
from jobs.models import RegisteredModel


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_register_model_parses_options_and_updates(db: Any) -> None:
    run(
        "register_model",
        "acme/llm",
        "--source",
        "/models/acme",
        "--endpoints",
        "chat, completions",
        "--option",
        "max_model_len=4096",
        "--option",
        "enforce_eager=true",
        "--option",
        "dtype=bfloat16",
        "--option",
        "gpu_memory_utilization=0.85",
    )
    model = RegisteredModel.objects.get(name="acme/llm")
    assert model.source == "/models/acme" and model.endpoints == ["chat", "completions"] and model.enabled
    assert model.engine_options == {
        "max_model_len": 4096,
        "enforce_eager": True,
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.85,
    }
    run("register_model", "acme/llm", "--endpoints", "embeddings", "--option", "max_num_seqs=8", "--disable")
    model.refresh_from_db()
    assert model.source == "/models/acme" and model.endpoints == ["embeddings"] and not model.enabled
    assert model.engine_options["max_num_seqs"] == 8 and model.engine_options["max_model_len"] == 4096
    run("register_model", "acme/llm", "--endpoints", "chat", "--replace-options", "--option", "dtype=float32")
    model.refresh_from_db()
    assert model.engine_options == {"dtype": "float32"} and model.enabled


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--endpoints", "chat,images"], "--endpoints"),
        (["--option", "max_model_len"], "expected key=value"),
        (["--option", "max_model_lenn=5"], "unknown engine option"),
        (["--option", "model=/elsewhere"], "cannot be set"),
    ],
)
def test_register_model_errors(db: Any, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("register_model", "acme/llm", *args)
    assert not RegisteredModel.objects.exists()


def test_register_model_defaults_source_to_name(db: Any) -> None:
    run("register_model", "Qwen/Qwen2.5-0.5B-Instruct", "--no-check")
    assert RegisteredModel.objects.get().source == "Qwen/Qwen2.5-0.5B-Instruct"


def test_prepare_demo_models_is_idempotent(db: Any, smollm2_dir: Path) -> None:
    # smollm2_dir (session fixture) is the converted folder, so this run must skip conversion.
    out = run("prepare_demo_models", "--models-dir", str(smollm2_dir.parent))
    assert "already present" in out
    RegisteredModel.objects.filter(name=demo.SMOLLM2_NAME).update(engine_options={"max_model_len": 2048})
    run("prepare_demo_models", "--models-dir", str(smollm2_dir.parent))
    smol = RegisteredModel.objects.get(name=demo.SMOLLM2_NAME)
    minilm = RegisteredModel.objects.get(name=demo.MINILM_NAME)
    assert smol.source == str(smollm2_dir) and smol.endpoints == ["chat", "completions"]
    assert smol.engine_options == {"max_model_len": 2048}  # an operator's options survive re-runs
    assert minilm.endpoints == ["embeddings"] and Path(minilm.source, "config.json").is_file()
    assert RegisteredModel.objects.count() == 2
