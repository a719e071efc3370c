"""Multi-GPU models in a Ray fleet, the plain part (jobs/fleet/groups.py and the group worker's
devices): which placement groups the queue wants, and why a model is left to others."""

from __future__ import annotations

import pytest

from jobs.engine.pinning import Devices
from jobs.fleet import groups
from jobs.models import RegisteredModel
from tests.worker.common import make_batch


def test_a_group_is_planned_per_size_with_queued_work_packed_on_one_node_when_it_fits():
    models = [("tp2", 2), ("tp2b", 2), ("tp4", 4), ("idle", 2)]
    plans, refused = groups.plan(models, {"tp2", "tp2b", "tp4"}, [4, 2], cpu=False)
    assert plans == [
        groups.GroupPlan(2, "STRICT_PACK", ("tp2", "tp2b")),  # one group serves both 2-GPU models
        groups.GroupPlan(4, "STRICT_PACK", ("tp4",)),
    ]
    assert refused == {}
    assert plans[1].bundles() == [{"GPU": 1.0}] * 4


def test_a_model_larger_than_any_node_spans_nodes_and_one_larger_than_the_cluster_waits():
    plans, refused = groups.plan([("tp2", 2), ("tp8", 8)], {"tp2", "tp8"}, [1, 1, 1], cpu=False)
    assert plans == [groups.GroupPlan(2, "PACK", ("tp2",))]
    assert "needs 8 GPUs and the cluster has 3" in refused["tp8"]


def test_groups_that_do_not_fit_beside_each_other_wait_smallest_first():
    plans, refused = groups.plan([("a", 2), ("b", 3)], {"a", "b"}, [2, 2], cpu=False)
    assert [p.size for p in plans] == [2]
    assert "other groups hold the rest" in refused["b"]


def test_a_cpu_fleet_refuses_every_multi_gpu_model_saying_why():
    plans, refused = groups.plan([("tp2", 2)], {"tp2"}, [0, 0], cpu=True)
    assert plans == [] and "a CPU fleet cannot run it" in refused["tp2"]


def test_a_group_worker_runs_its_size_with_vllms_ray_executor_and_refuses_other_sizes():
    group = Devices("group", size=2)
    assert group.label == "ray-group:2" and group.count == 2 and group.environment() == {}
    options = {"tensor_parallel_size": 2, "max_model_len": 512}
    assert group.engine_options(options) == {**options, "distributed_executor_backend": "ray"}
    assert options == {"tensor_parallel_size": 2, "max_model_len": 512}  # the registry's copy untouched
    assert group.refusal("tp2", options) is None
    assert "this group has 2 GPUs" in str(group.refusal("tp4", {"tensor_parallel_size": 4}))
    # A one-GPU model is the one-GPU workers' work, not the group's.
    assert "needs 1 GPU " in str(group.refusal("one", {}))
    # Other workers' options stay as registered.
    assert Devices("cuda", ("0", "1")).engine_options(options) is options


@pytest.mark.django_db
def test_the_registry_and_queue_give_the_multi_gpu_models_and_those_with_work(client, models, upload):
    RegisteredModel.objects.create(
        name="tp2", source="/m/tp2", endpoints=["chat"], engine_options={"tensor_parallel_size": 2}
    )
    RegisteredModel.objects.create(
        name="pp2",
        source="/m/pp2",
        endpoints=["chat"],
        engine_options={"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
    )
    RegisteredModel.objects.create(
        name="bad", source="/m/bad", endpoints=["chat"], engine_options={"tensor_parallel_size": "2"}
    )
    assert sorted(groups.multi_gpu_models()) == [("pp2", 4), ("tp2", 2)]
    assert groups.queued_models() == set()
    make_batch(
        client,
        upload,
        [
            {
                "custom_id": "a",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "tp2", "messages": [{"role": "user", "content": "hi"}]},
            }
        ],
    )
    assert groups.queued_models() == {"tp2"}


def test_the_autoscaler_request_is_remade_when_a_group_starts_or_drains_with_the_same_queue(monkeypatch):
    """Ray's autoscaler and the groups are stood in for (labelled: this is about what the fleet
    asks for; the live fleet tests run a real cluster): each request replaces the last one, so a
    group started or drained must be asked for at once, not when the queue next changes size."""
    import ray

    from jobs.fleet import autoscale, ray_fleet

    fleet = ray_fleet.Fleet(autoscale=True, idle_seconds=0)
    requests: list[tuple[int, list[dict[str, float]]]] = []
    monkeypatch.setattr(ray, "nodes", lambda: [])
    monkeypatch.setattr(autoscale, "queued_chunks", lambda: 4)
    monkeypatch.setattr(autoscale, "request", lambda workers, bundle, extra=(): requests.append((workers, list(extra))))
    monkeypatch.setattr(fleet, "reconcile_groups", lambda nodes: 0)
    fleet.reconcile()
    fleet.reconcile()
    assert requests == [(2, [])]  # the same queue, no group: asked once
    fleet.groups[2] = ray_fleet.Slot("g", "node", handle=None, size=2)
    fleet.reconcile()
    assert requests[-1] == (2, [{"GPU": 1.0}, {"GPU": 1.0}])
    fleet.groups[2].drain = object()
    fleet.reconcile()
    assert requests[-1] == (2, []) and len(requests) == 3
    assert groups.bundles(3) == [{"GPU": 1.0}] * 3
