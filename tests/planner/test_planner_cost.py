"""planner.cost: the GPU-hours a plan commits and the progress it throws away."""

from __future__ import annotations

from madinfra.planner.cost import estimate
from madinfra.resources import Change, Resource


def job(name: str, gpus: int = 8, **status) -> Resource:
    return Resource("job", name, {"time": "x"}, gpus=gpus, workload=True, role=name, provider_id="7", status=dict(status))


def hours(resource: Resource) -> float | None:
    return {"train": 24.0, "eval": 0.5}.get(resource.name)


def test_a_new_run_commits_its_gpus_times_its_time_limit_and_prices_it() -> None:
    cost = estimate([Change("create", "job/train", job("train"), None)], 8, serving=False, limit_of=hours, price=2.5)
    assert cost.committed_gpu_hours == 192
    assert cost.lines() == ["Cost: commits up to 192 GPU-hours (GPUs x time limit) ≈ 480.00 USD"]


def test_a_run_without_a_limit_is_unbounded_and_named() -> None:
    cost = estimate([Change("create", "job/open", job("open"), None), Change("create", "job/eval", job("eval", 4), None)], 12, serving=False, limit_of=hours)
    assert cost.committed_gpu_hours == 2 and cost.unbounded == ["job/open"]
    assert cost.lines() == ["Cost: commits up to 2 GPU-hours (GPUs x time limit); no upper bound: job/open has no time limit"]
    alone = estimate([Change("create", "job/open", job("open"), None)], 8, serving=False, limit_of=hours)
    assert alone.lines() == ["Cost: no upper bound on GPU-hours: job/open has no time limit"]


def test_replacing_a_running_job_throws_away_its_elapsed_gpu_hours() -> None:
    running = job("train", running=True, elapsed_seconds=5400)
    cost = estimate([Change("replace", "job/train", job("train"), running)], 8, serving=False, limit_of=hours, price=2.0)
    assert [(l.resource_id, l.gpu_hours) for l in cost.lost] == [("job/train", 12.0)]
    assert cost.warnings() == ["job/train has run for 1h30m on 8 GPU(s): this plan throws away up to 12 GPU-hours of its progress ≈ 24.00 USD"]
    assert cost.to_json()["lost"] == [{"address": "job/train", "gpus": 8, "elapsed_seconds": 5400, "gpu_hours": 12.0}]


def test_a_finished_or_pending_job_loses_nothing() -> None:
    finished = job("train", running=False, finished=True, elapsed_seconds=5400)
    pending = job("eval", state="PENDING", elapsed_seconds=0)
    cost = estimate([Change("delete", "job/train", None, finished), Change("delete", "job/eval", None, pending)], 0, serving=False, limit_of=hours)
    assert cost.lost == [] and cost.lines() == []


def test_serving_is_shown_per_day_for_the_whole_stack() -> None:
    cost = estimate([Change("create", "job/decode-0", job("decode-0"), None)], 32, serving=True, limit_of=hours, price=1.0, currency="EUR")
    assert cost.lines() == ["Cost: serving holds 32 GPU(s) = 768 GPU-hours per day ≈ 768.00 EUR"]
    assert cost.committed_gpu_hours == 0


def test_an_update_commits_gpus_only_when_the_plan_says_it_restarts_the_workload() -> None:
    finished = job("train", finished=True)
    update = Change("update", "job/train", job("train"), finished)
    assert estimate([update], 8, serving=False, limit_of=hours).committed_gpu_hours == 0
    assert estimate([update], 8, serving=False, limit_of=hours, restarted=frozenset({"job/train"})).committed_gpu_hours == 192
