"""What each model costs on each worker: measured rates and load times, with priors.

Workers record a measurement at every chunk completion (requests/s and output
tokens/s, exponentially weighted) and at every model load (seconds), per model
and GPU slot (host and device). The queue plan reads them back through an
``Estimator``, which falls back, for a model not yet measured on a slot, to
the model's measurements on other slots, then to the operator's prior on the
registered model, then to the fleet's average, and says "unknown" (None) only
when there is nothing at all to go on.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import fmean

from django.db import transaction

from jobs.models import ModelMeasure, RegisteredModel

# Rates are decayed sums: requests (and output tokens) over the engine seconds
# they took, each sum multiplied by exp(-d / RATE_HORIZON_SECONDS) before a
# chunk of d seconds is added. So a sample weighs as much as the time it
# covers (a two-line batch that never filled the engine cannot outweigh a
# long chunk, as it would in a per-sample average), and work older than a few
# horizons of engine time fades out.
RATE_HORIZON_SECONDS = 600.0
# Loads are few and similar: each moves the average half way.
LOAD_WEIGHT = 0.5

Slot = tuple[str, str]  # (host, device)


def _blend(old: float | None, new: float, weight: float) -> float:
    return new if old is None else old + weight * (new - old)


def record_chunk(model: str, slot: Slot, requests: int, output_tokens: int, seconds: float) -> None:
    """A chunk of ``requests`` lines ran in ``seconds`` of the engine's time on ``slot``."""
    if requests <= 0 or not seconds > 0 or not math.isfinite(seconds):
        return
    keep = math.exp(-seconds / RATE_HORIZON_SECONDS)
    with transaction.atomic():
        measure = _row(model, slot)
        measure.decayed_requests = measure.decayed_requests * keep + requests
        measure.decayed_output_tokens = measure.decayed_output_tokens * keep + max(output_tokens, 0)
        measure.decayed_seconds = measure.decayed_seconds * keep + seconds
        measure.requests_per_second = measure.decayed_requests / measure.decayed_seconds
        measure.output_tokens_per_second = measure.decayed_output_tokens / measure.decayed_seconds
        measure.chunks += 1
        measure.save()


def record_load(model: str, slot: Slot, seconds: float) -> None:
    """``model`` became ready on ``slot`` ``seconds`` after the worker set out to load it."""
    if not seconds >= 0 or not math.isfinite(seconds):
        return
    with transaction.atomic():
        measure = _row(model, slot)
        measure.load_seconds = _blend(measure.load_seconds, seconds, LOAD_WEIGHT)
        measure.loads += 1
        measure.save()


def _row(model: str, slot: Slot) -> ModelMeasure:
    # Locked for the read-modify-write (on SQLite the transaction's write lock
    # does it): two workers on one slot must not lose each other's samples.
    measure, _ = ModelMeasure.objects.select_for_update().get_or_create(model=model, host=slot[0], device=slot[1])
    return measure


class Meter:
    """A worker's own account of its engine: swaps made, and the measurements it records.

    A swap is a load of a model other than the one the worker last loaded (a
    reload of the same model after an engine death is not one, nor is the first).

    Throughput is counted from results, not per chunk: the engine keeps a
    window of lines in flight that spans chunks (and small batches), so a
    chunk's own start-to-end time includes other chunks' work. The results
    since the last cut, over the engine time since then (or since the first
    of them was fed, after an idle spell), are cut at every chunk end and at
    least every FLUSH_SECONDS, so a long chunk informs the estimates before it
    ends. A cut is written to the database at the next result (or load, or
    ``flush``), not at the chunk's end: between a chunk's end and the next
    claim the worker runs nothing, and that gap is kept short.
    """

    FLUSH_SECONDS = 10.0

    def __init__(self, device: str) -> None:
        self.slot: Slot = (socket.gethostname(), device)
        self.swaps = 0
        self.last_model: str | None = None
        self._model: str | None = None  # the model of the results counted below
        self._requests = 0
        self._tokens = 0
        self._since: float | None = None  # monotonic start of the engine time they took
        self._last_point = 0.0  # monotonic time of the last cut
        self._cuts: list[tuple[str, int, int, float]] = []  # (model, requests, tokens, seconds) to record

    def loaded(self, model: str, seconds: float) -> bool:
        """Record a load; True if it was a swap."""
        self.flush()
        swapped = self.last_model is not None and self.last_model != model
        self.swaps += swapped
        self.last_model = model
        record_load(model, self.slot, seconds)
        self._last_point = time.monotonic()
        return swapped

    def result(self, model: str, output_tokens: int, fed_from: float) -> None:
        """One result of ``model``, from a chunk whose lines were fed from ``fed_from`` (monotonic)."""
        self._record_cuts()
        if model != self._model:
            self.cut()
            self._model = model
        if self._since is None:
            self._since = max(fed_from, self._last_point)
        self._requests += 1
        self._tokens += max(int(output_tokens or 0), 0)
        if time.monotonic() - self._since >= self.FLUSH_SECONDS:
            self.flush()

    def cut(self) -> None:
        """Close the current measurement (a chunk ended); it is recorded at the next result."""
        if not self._requests or self._model is None or self._since is None:
            return
        now = time.monotonic()
        self._cuts.append((self._model, self._requests, self._tokens, now - self._since))
        self._requests = self._tokens = 0
        self._since = None
        self._last_point = now

    def flush(self) -> None:
        """Cut and record now (the worker goes idle, or the model is about to change)."""
        self.cut()
        self._record_cuts()

    def _record_cuts(self) -> None:
        while self._cuts:
            model, requests, tokens, seconds = self._cuts[0]
            record_chunk(model, self.slot, requests, tokens, seconds)
            self._cuts.pop(0)  # only once written: a database error leaves it for the next try


@dataclass(frozen=True)
class Estimate:
    value: float | None
    basis: str  # "measured", "measured elsewhere", "prior", "fleet average" or "unknown"


class Estimator:
    """Rates and load times per (model, slot), from the measurements and priors read once."""

    def __init__(self, measures: Iterable[ModelMeasure], priors: dict[str, tuple[float | None, float | None]]) -> None:
        self._rate: dict[tuple[str, Slot], float] = {}
        self._load: dict[tuple[str, Slot], float] = {}
        for m in measures:
            key = (m.model, (m.host, m.device))
            if m.requests_per_second and m.requests_per_second > 0:
                self._rate[key] = m.requests_per_second
            if m.load_seconds is not None and m.load_seconds >= 0:
                self._load[key] = m.load_seconds
        self._priors = priors
        self._fleet_rate = fmean(self._rate.values()) if self._rate else None
        self._fleet_load = fmean(self._load.values()) if self._load else None

    @classmethod
    def from_database(cls) -> Estimator:
        priors = {
            name: (rate, load)
            for name, rate, load in RegisteredModel.objects.values_list(
                "name", "expected_requests_per_second", "expected_load_seconds"
            )
        }
        return cls(ModelMeasure.objects.all(), priors)

    def rate(self, model: str, slot: Slot | None) -> Estimate:
        """Requests/s of ``model`` on ``slot`` (None: a worker not yet known)."""
        prior = self._priors.get(model, (None, None))[0]
        return self._estimate(self._rate, model, slot, prior, self._fleet_rate)

    def load(self, model: str, slot: Slot | None) -> Estimate:
        prior = self._priors.get(model, (None, None))[1]
        return self._estimate(self._load, model, slot, prior, self._fleet_load)

    def seconds_per_request(self, model: str, slot: Slot | None) -> float | None:
        rate = self.rate(model, slot).value
        return 1.0 / rate if rate else None

    def load_seconds(self, model: str, slot: Slot | None) -> float | None:
        return self.load(model, slot).value

    @staticmethod
    def _estimate(
        table: dict[tuple[str, Slot], float], model: str, slot: Slot | None, prior: float | None, fleet: float | None
    ) -> Estimate:
        if slot is not None and (model, slot) in table:
            return Estimate(table[(model, slot)], "measured")
        elsewhere = [value for (name, _), value in table.items() if name == model]
        if elsewhere:
            return Estimate(fmean(elsewhere), "measured elsewhere")
        if prior is not None:
            return Estimate(prior, "prior")
        if fleet is not None:
            return Estimate(fleet, "fleet average")
        return Estimate(None, "unknown")
