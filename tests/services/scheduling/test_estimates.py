"""Measured rates and load times, and the priors and averages that stand in until a model is measured."""

from __future__ import annotations

import io
import math

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from jobs.models import ModelMeasure, RegisteredModel
from jobs.services.scheduling import estimates
from jobs.services.scheduling.estimates import Estimator, Meter, record_chunk, record_load

pytestmark = pytest.mark.django_db

GPU0 = ("host-a", "cuda:0")
GPU1 = ("host-b", "cuda:0")


def measure(model: str = "A", slot: tuple[str, str] = GPU0) -> ModelMeasure:
    return ModelMeasure.objects.get(model=model, host=slot[0], device=slot[1])


def test_the_rates_are_work_over_engine_time_with_older_work_fading():
    record_chunk("A", GPU0, requests=100, output_tokens=3200, seconds=10)
    first = measure()
    assert (first.requests_per_second, first.output_tokens_per_second, first.chunks) == (10, 320, 1)
    record_chunk("A", GPU0, requests=400, output_tokens=0, seconds=20)
    keep = math.exp(-20 / estimates.RATE_HORIZON_SECONDS)
    second = measure()
    assert second.requests_per_second == pytest.approx((100 * keep + 400) / (10 * keep + 20))
    assert second.output_tokens_per_second == pytest.approx(3200 * keep / (10 * keep + 20))
    assert second.chunks == 2


def test_a_short_sample_weighs_as_little_as_the_time_it_covers():
    # Two lines that never filled the engine, then a long chunk at the real rate.
    record_chunk("A", GPU0, 2, 0, 1.0)
    record_chunk("A", GPU0, 600, 0, 60.0)
    assert measure().requests_per_second == pytest.approx(10, rel=0.02)


def test_work_long_past_fades_out():
    record_chunk("A", GPU0, 100, 0, 10.0)  # 10 req/s, long ago
    for _ in range(10):
        record_chunk("A", GPU0, 600, 0, 300.0)  # then 2 req/s for 50 minutes of engine time
    assert measure().requests_per_second == pytest.approx(2, rel=0.01)


@pytest.mark.parametrize(
    "requests, seconds", [(0, 1.0), (-5, 1.0), (10, 0.0), (10, -1.0), (10, math.nan), (10, math.inf)]
)
def test_nonsense_samples_are_not_recorded(requests, seconds):
    record_chunk("A", GPU0, requests, 0, seconds)
    assert not ModelMeasure.objects.exists()


def test_loads_average_half_way_and_are_kept_per_model_and_slot():
    record_load("A", GPU0, 30)
    record_load("A", GPU0, 40)
    record_load("A", GPU1, 100)
    record_load("B", GPU0, 7)
    assert measure().load_seconds == 35 and measure().loads == 2
    assert measure(slot=GPU1).load_seconds == 100
    assert measure("B").load_seconds == 7
    record_load("A", GPU0, math.nan)
    assert measure().loads == 2


def test_the_meter_counts_swaps_not_first_loads_or_reloads(monkeypatch):
    meter = Meter("cuda:0")
    assert meter.loaded("A", 1.0) is False  # first load
    assert meter.loaded("A", 1.0) is False  # reload after an engine death
    assert meter.loaded("B", 1.0) is True
    assert meter.loaded("A", 1.0) is True
    assert meter.swaps == 2
    assert ModelMeasure.objects.get(model="A").loads == 3


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        monkeypatch.setattr(estimates.time, "monotonic", lambda: self.now)


def test_the_meter_counts_results_over_the_engine_time_whichever_chunk_they_belong_to(monkeypatch):
    clock = Clock(monkeypatch)
    meter = Meter("cpu")
    # Three chunks fed at 0, 0.1 and 0.2 s are in flight together; results arrive over 9 s.
    for i in range(90):
        clock.now = 0.1 * (i + 1)
        meter.result("A", 2, fed_from=(0.0, 0.1, 0.2)[i % 3])
    meter.cut()  # a chunk ended: nothing is written until the next result or a flush
    assert not ModelMeasure.objects.exists()
    meter.flush()
    assert measure("A", meter.slot).requests_per_second == pytest.approx(10)
    assert measure("A", meter.slot).output_tokens_per_second == pytest.approx(20)


def test_an_idle_spell_is_not_counted_and_a_long_chunk_is_measured_before_it_ends(monkeypatch):
    clock = Clock(monkeypatch)
    meter = Meter("cpu")
    clock.now = 10.0
    meter.result("A", 0, fed_from=5.0)  # 1 request in 5 s
    meter.flush()
    clock.now = 100.0  # idle for 90 s, then a chunk fed at 100
    for i in range(1, 31):
        clock.now = 100.0 + i * 0.5  # 2 req/s; the meter records by itself after FLUSH_SECONDS
        meter.result("A", 0, fed_from=100.0)
    row = measure("A", meter.slot)
    assert row.chunks == 2  # recorded at the flush, then once 10 s into the long chunk
    keep = math.exp(-10 / estimates.RATE_HORIZON_SECONDS)
    assert row.requests_per_second == pytest.approx((1 * keep + 20) / (5 * keep + 10))


def test_results_of_another_model_start_a_new_count(monkeypatch):
    clock = Clock(monkeypatch)
    meter = Meter("cpu")
    clock.now = 1.0
    meter.result("A", 0, fed_from=0.0)
    clock.now = 3.0
    meter.result("B", 0, fed_from=1.0)
    clock.now = 5.0
    meter.result("B", 0, fed_from=1.0)
    meter.flush()
    assert measure("A", meter.slot).requests_per_second == pytest.approx(1 / 3)  # up to the switch
    assert measure("B", meter.slot).requests_per_second == pytest.approx(2 / 2)  # from the switch


class TestTheEstimator:
    def test_a_slots_own_measure_comes_first(self):
        record_chunk("A", GPU0, 100, 0, 10)
        record_chunk("A", GPU1, 100, 0, 50)
        estimator = Estimator.from_database()
        assert estimator.rate("A", GPU0).value == 10 and estimator.rate("A", GPU0).basis == "measured"
        assert estimator.seconds_per_request("A", GPU1) == pytest.approx(0.5)

    def test_then_the_models_measures_on_other_slots(self):
        record_chunk("A", GPU0, 100, 0, 10)
        record_chunk("A", GPU1, 100, 0, 50)
        got = Estimator.from_database().rate("A", ("host-c", "cuda:3"))
        assert (got.value, got.basis) == (pytest.approx(6), "measured elsewhere")
        assert Estimator.from_database().rate("A", None).basis == "measured elsewhere"

    def test_then_the_operators_prior(self):
        RegisteredModel.objects.create(
            name="B", source="/b", endpoints=["chat"], expected_requests_per_second=3, expected_load_seconds=40
        )
        record_chunk("A", GPU0, 100, 0, 10)
        estimator = Estimator.from_database()
        assert (estimator.rate("B", GPU0).value, estimator.rate("B", GPU0).basis) == (3, "prior")
        assert (estimator.load("B", GPU0).value, estimator.load("B", GPU0).basis) == (40, "prior")

    def test_then_the_fleets_average(self):
        record_chunk("A", GPU0, 100, 0, 10)
        record_chunk("C", GPU1, 100, 0, 5)
        record_load("A", GPU0, 30)
        estimator = Estimator.from_database()
        assert (estimator.rate("B", GPU0).value, estimator.rate("B", GPU0).basis) == (15, "fleet average")
        assert estimator.load_seconds("B", GPU1) == 30

    def test_with_nothing_at_all_it_says_unknown(self):
        estimator = Estimator.from_database()
        assert estimator.rate("A", GPU0).basis == "unknown"
        assert estimator.seconds_per_request("A", GPU0) is None and estimator.load_seconds("A", None) is None


class TestPriors:
    def run(self, *args: str) -> str:
        out = io.StringIO()
        call_command("register_model", "acme/llm", "--source", "/m", "--no-check", *args, stdout=out)
        return out.getvalue()

    def test_register_model_sets_keeps_and_clears_them(self):
        self.run("--expected-rps", "40", "--expected-load-seconds", "35.5")
        model = RegisteredModel.objects.get(name="acme/llm")
        assert (model.expected_requests_per_second, model.expected_load_seconds) == (40, 35.5)
        self.run("--option", "max_model_len=4096")  # another change keeps them
        model.refresh_from_db()
        assert (model.expected_requests_per_second, model.expected_load_seconds) == (40, 35.5)
        assert "expected_rps=None" in self.run("--expected-rps", "none")

    @pytest.mark.parametrize(
        "flag, value",
        [
            ("--expected-rps", "fast"),
            ("--expected-rps", "0"),
            ("--expected-rps", "-3"),
            ("--expected-rps", "nan"),
            ("--expected-rps", "inf"),
            ("--expected-rps", "1e400"),
            ("--expected-rps", "1e12"),
            ("--expected-load-seconds", "-1"),
            ("--expected-load-seconds", "NaN"),
            ("--expected-load-seconds", "1e9"),
            ("--expected-load-seconds", "\udc80"),
        ],
    )
    def test_register_model_refuses_nonsense_and_stores_nothing(self, flag, value):
        with pytest.raises(CommandError) as info:
            self.run(flag, value)
        assert flag in str(info.value)
        assert not RegisteredModel.objects.exists()

    @pytest.mark.parametrize(
        "field, value",
        [
            ("expected_requests_per_second", math.nan),
            ("expected_requests_per_second", math.inf),
            ("expected_requests_per_second", -1.0),
            ("expected_requests_per_second", 0.0),
            ("expected_requests_per_second", 1e8),
            ("expected_load_seconds", math.nan),
            ("expected_load_seconds", -math.inf),
            ("expected_load_seconds", -0.5),
            ("expected_load_seconds", 86401.0),
        ],
    )
    def test_the_model_validates_them_as_the_admin_does(self, field, value):
        model = RegisteredModel(name="x", source="/x", endpoints=["chat"], **{field: value})
        with pytest.raises(ValidationError) as info:
            model.full_clean()
        assert field in info.value.message_dict

    def test_the_admin_form_refuses_nan(self, admin_client):
        response = admin_client.post(
            "/admin/jobs/registeredmodel/add/",
            {
                "name": "x",
                "source": "/x",
                "endpoints": '["chat"]',
                "engine_options": "{}",
                "enabled": "on",
                "expected_requests_per_second": "nan",
            },
        )
        assert response.status_code == 200 and b"errorlist" in response.content
        assert not RegisteredModel.objects.exists()

    def test_the_admin_lists_measures_read_only(self, admin_client):
        record_chunk("A", GPU0, 100, 0, 10)
        page = admin_client.get("/admin/jobs/modelmeasure/")
        assert page.status_code == 200 and b"host-a" in page.content
        assert admin_client.get("/admin/jobs/modelmeasure/add/").status_code == 403
