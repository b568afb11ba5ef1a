"""A KV cache layout change replaces prefill and decode together on the real SLURM sandbox
(issue 14 part 3).

Both pools' stand-in servers take ``--page-size`` as SGLang's do, so madinfra reads their
layout from the commands; the proxy is madinfra's generated supervisor around the stand-in
mini_lb. A ``ProxyWatch`` thread polls the proxy during apply: it must never list an old and a
new replica at once (old prefill handing KV to new decode is exactly what the plan promises
cannot happen), nor a job that is not RUNNING.

- room (1 GPU per replica): the new replicas start beside the old ones, the proxy switches, the
  old ones go; a new layout that never turns healthy is rolled back with the old jobs untouched;
- no room (4 GPUs per replica fill the three nodes): the old replicas stop first.
"""

from __future__ import annotations

import pytest
from serving_support import ProxyWatch, Serving, free_port, install_standins

pytestmark = pytest.mark.slurm


def reason(before: int, after: int) -> str:
    return f"prefill: --page-size {before} -> {after}; decode: --page-size {before} -> {after}"


def new_serving(new_sandbox_stack) -> Serving:
    stack = new_sandbox_stack()
    install_standins(stack.workdir)
    return Serving(stack, free_port(), partition="pools")  # every GPU there is this test's (plans count them)


def replicas(ids: dict[str, str]) -> set[str]:
    return {job for role, job in ids.items() if role != "proxy"}


def switched(svc: Serving, before: dict[str, str], watch: ProxyWatch) -> dict[str, str]:
    """Every replica of both pools is new, the proxy never listed old and new at once, and it
    routes to exactly the new ones."""
    after = svc.id_of()
    old, new = replicas(before), replicas(after)
    assert not old & new, "every replica of both pools was replaced"
    assert not watch.violations, watch.violations
    mixed = [listing for listing in watch.listings if set(listing) & old and set(listing) & new]
    assert watch.samples and not mixed, f"the proxy listed old and new replicas together: {mixed[:3]}"
    assert sorted(svc.proxy()["jobs"]["prefill"] + svc.proxy()["jobs"]["decode"]) == sorted(new)
    assert after["proxy"] == before["proxy"], "the proxy job itself is not restarted"
    assert svc.plan_is_empty()
    return after


def test_with_room_both_pools_start_beside_the_old_ones_and_a_failure_leaves_the_old_ones_serving(new_sandbox_stack) -> None:
    svc = new_serving(new_sandbox_stack)
    svc.write(1, 2, page_size=16)
    svc.apply()
    first = svc.id_of()

    svc.write(1, 2, page_size=32)
    plan = svc.plan()
    how = "new replicas start beside the old ones, then the proxy switches"
    assert {p["pool"]: p["lines"] for p in plan["rollouts"]} == {
        "prefill": [f"-/+ prefill[0] replaced together with the other pool ({reason(16, 32)}); {how}"],
        "decode": [f"-/+ decode[0..1] replaced together with the other pool ({reason(16, 32)}); {how}"],
    }
    assert plan["gpus"]["peak"] == 6, "both versions' GPUs for a moment"
    assert any(w.startswith(f"prefill and decode are replaced together because their KV cache layout changes ({reason(16, 32)})") for w in plan["warnings"])
    split = svc.stack.cli("plan", str(svc.stack.path), "--only", "decode-0", check=False)
    assert split.returncode != 0 and "--only decode-0 would change one disaggregated pool without the other" in split.stdout + split.stderr
    assert "Traceback" not in split.stdout + split.stderr

    with ProxyWatch(svc) as watch:
        svc.apply()
    second = switched(svc, first, watch)
    assert {svc.info(job)["page_size"] for job in replicas(second)} == {"32"}

    # A new layout whose decode never turns healthy: every new job is cancelled, the old ones never stopped.
    svc.write(1, 2, page_size=64, env={"decode": {"STANDIN_FAIL_HEALTH": "1"}})
    with ProxyWatch(svc, min_ready={"prefill": 1, "decode": 2}) as watch:
        failed = svc.apply(check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "rolled back" in output and "Traceback" not in output, output
    assert not watch.violations, watch.violations
    assert svc.id_of() == second, "the previous version kept serving"
    again = svc.plan()
    assert any("replaced together" in line for p in again["rollouts"] for line in p["lines"]), "the next plan proposes it again"
    assert "Destroy complete!" in svc.stack.cli("destroy", str(svc.stack.path), "--yes").stdout


def test_without_room_the_old_replicas_of_both_pools_stop_first(new_sandbox_stack) -> None:
    svc = new_serving(new_sandbox_stack)
    svc.write(1, 2, gpus=4, page_size=16)
    svc.apply()
    first = svc.id_of()

    svc.write(1, 2, gpus=4, page_size=32)
    plan = svc.plan()
    how = "old replicas stop first: room for 0 more replica(s) now, 3 needed to start both pools beside the old ones"
    assert {p["pool"]: p["lines"] for p in plan["rollouts"]}["decode"] == [f"-/+ decode[0..1] replaced together with the other pool ({reason(16, 32)}); {how}"]
    assert plan["gpus"]["peak"] == 12
    with ProxyWatch(svc) as watch:
        svc.apply()
    second = switched(svc, first, watch)
    assert {svc.info(job)["page_size"] for job in replicas(second)} == {"32"}
    assert "Destroy complete!" in svc.stack.cli("destroy", str(svc.stack.path), "--yes").stdout
