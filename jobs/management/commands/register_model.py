"""Register (or update) a model workers may load.

    python manage.py register_model NAME --source PATH_OR_HUB_ID \\
        --endpoints chat,completions --option max_model_len=4096 --option dtype=float32 [--disable] \\
        [--expected-rps 40] [--expected-load-seconds 35]
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.models import ENDPOINT_KINDS, RegisteredModel

KINDS = sorted(set(ENDPOINT_KINDS.values()))


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it is JSON (4096, true, 0.9, {...}), else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CommandError(f"--option {text!r}: expected key=value")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def parse_endpoints(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise CommandError(f"--endpoints {text!r}: use a comma-separated list of {', '.join(KINDS)}")
    return list(dict.fromkeys(kinds))


PRIORS = {"expected_rps": "expected_requests_per_second", "expected_load_seconds": "expected_load_seconds"}


def parse_prior(option: str, field: str, text: str) -> float | None:
    """A number for a RegisteredModel prior, checked by the field's own validators; ``none`` clears it."""
    if text.strip().lower() == "none":
        return None
    flag = "--" + option.replace("_", "-")
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"{flag} {text!r}: expected a number, or none to clear it") from None
    try:
        for validate in RegisteredModel._meta.get_field(field).validators:  # type: ignore[union-attr]
            validate(value)
    except ValidationError as exc:
        raise CommandError(f"{flag} {text!r}: {' '.join(exc.messages)}") from None
    return value


class Command(BaseCommand):
    help = "Register or update a model (API name, source, endpoint kinds, vLLM engine options)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="API name clients send as body.model, e.g. meta-llama/Llama-3.1-8B-Instruct")
        parser.add_argument("--source", help="Local model folder or hub id (default: the NAME)")
        parser.add_argument("--endpoints", default="chat,completions", help=f"Comma-separated: {', '.join(KINDS)}")
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="vLLM engine option (repeatable), e.g. max_model_len=4096",
        )
        parser.add_argument(
            "--replace-options", action="store_true", help="Replace the stored options instead of merging into them"
        )
        parser.add_argument("--disable", action="store_true", help="Register it disabled")
        parser.add_argument("--no-check", action="store_true", help="Do not check option names against vLLM")
        parser.add_argument(
            "--expected-rps",
            metavar="REQUESTS_PER_SECOND",
            help="Prior for queue ETAs until workers have measured the model (none clears it)",
        )
        parser.add_argument(
            "--expected-load-seconds",
            metavar="SECONDS",
            help="Prior load time for queue ETAs until measured (none clears it)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        name = opts["name"].strip()
        if not name:
            raise CommandError("NAME must not be empty")
        options = dict(parse_option(o) for o in opts["option"])
        existing = RegisteredModel.objects.filter(name=name).first()
        if existing is not None and not opts["replace_options"]:
            options = {**existing.engine_options, **options}
        if not opts["no_check"]:
            self._check(options)
        source = opts["source"] or (existing.source if existing else name)
        priors = {
            field: parse_prior(option, field, opts[option])
            for option, field in PRIORS.items()
            if opts[option] is not None
        }
        model, created = RegisteredModel.objects.update_or_create(
            name=name,
            defaults={
                "source": source,
                "endpoints": parse_endpoints(opts["endpoints"]),
                "engine_options": options,
                "enabled": not opts["disable"],
                **priors,
            },
        )
        verb = "Registered" if created else "Updated"
        state = "enabled" if model.enabled else "disabled"
        self.stdout.write(
            f"{verb} {model.name} ({state}): source={model.source} endpoints={','.join(model.endpoints)}"
            f" options={json.dumps(model.engine_options, sort_keys=True)}"
            f" expected_rps={model.expected_requests_per_second} expected_load_seconds={model.expected_load_seconds}"
        )

    def _check(self, options: dict[str, Any]) -> None:
        try:
            from jobs.engine.base import ModelLoadError
            from jobs.engine.options import check_options
        except ImportError as exc:  # pragma: no cover - engine package always ships
            raise CommandError(str(exc)) from exc
        try:
            check_options(options)
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from exc
        except ImportError:
            # A web-only host without vLLM cannot check names; the worker will.
            self.stderr.write("vLLM is not installed here; option names not checked")
