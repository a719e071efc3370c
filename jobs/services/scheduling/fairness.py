"""Fair share between users: whose work a free worker takes next. Pure (no database).

Among the owners with work waiting, the one furthest below their share of
worker time goes first: the lowest decayed worker seconds per unit of weight
(ties: the owner whose oldest line has waited longest). Inside the chosen
owner's work the policy in force (fifo or affinity) picks as it would with
that owner alone, so with one user the order is exactly the seed's.

Swaps forced by fairness are budgeted: an owner whose work is all on models
other than the worker's loaded one may take it only once their oldest line
has waited ``switch_seconds`` (BATCHSITE_FAIR_SWITCH_SECONDS). Until then
the worker keeps serving the owners on its model, so two users on two
models do not make a worker swap every chunk. With nothing loaded, or no
owner's work on the loaded model, a swap is due anyway and the budget does
not apply.

The claim (jobs/services/scheduling/__init__.py) calls ``choose_owner`` on
what it reads; the queue simulation can call the same function.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

from jobs.services.scheduling.policy import Waiting

Owner = TypeVar("Owner", bound=Hashable)
DEFAULT_WEIGHT = 1.0


def waiting_by_owner(queue: tuple[Waiting, ...], now: float) -> dict[int | None, dict[str, float]]:
    """Per owner, per model, since when their oldest line of that model has waited (Unix seconds).

    A batch with a chunk running (``waiting_since`` None) is being served: it counts as
    waiting since ``now``, so it never makes its owner overdue."""
    out: dict[int | None, dict[str, float]] = {}
    for item in queue:
        since = item.waiting_since if item.waiting_since is not None else now
        models = out.setdefault(item.owner, {})
        models[item.model] = min(since, models.get(item.model, since))
    return out


def choose_owner(
    waiting: Mapping[Owner, Mapping[str, float]],
    usage: Mapping[Owner, float],
    weights: Mapping[Owner, float],
    loaded_model: str | None,
    now: float,
    switch_seconds: float,
) -> Owner | None:
    """The owner whose work the worker holding ``loaded_model`` takes next; None: nobody has work.

    ``waiting``: per owner, per model, since when its oldest line has waited.
    ``usage``: decayed worker seconds (0 for an owner not listed); ``weights``: 1 if not listed.
    """
    owners = [owner for owner, models in waiting.items() if models]
    if len(owners) <= 1:
        return owners[0] if owners else None

    def oldest(owner: Owner) -> float:
        return min(waiting[owner].values())

    def deficit(owner: Owner) -> tuple[float, float, str]:
        weight = weights.get(owner, DEFAULT_WEIGHT)
        share = usage.get(owner, 0.0) / weight if weight > 0 else float("inf")
        return share, oldest(owner), str(owner)

    owners.sort(key=deficit)
    on_loaded = loaded_model is not None and any(loaded_model in waiting[owner] for owner in owners)
    if not on_loaded:
        return owners[0]
    for owner in owners:
        if loaded_model in waiting[owner] or now - oldest(owner) >= switch_seconds:
            return owner
    return None  # not reached: some owner has work on the loaded model
