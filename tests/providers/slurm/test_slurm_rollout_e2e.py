"""Disaggregated pools change replica by replica on the real SLURM sandbox (issue 13).

Each prefill/decode replica is its own job (``slurm/Job/decode-2``); the proxy is madinfra's
generated supervisor around a stand-in mini_lb (``serving_support.py``), so its restarts and
``endpoints/.proxy-seen`` acknowledgements are real. A ``ProxyWatch`` thread polls the proxy
during every apply and fails the test if it ever routed to a replica job that was not RUNNING.

- surge stack (1 GPU per replica, not exclusive: room for surge replicas): decode 3 -> 2 -> 3
  keeps the untouched replicas' job ids; an env change rolls decode with surge 1; a new version
  that never turns healthy is rolled back (the old jobs never stopped); ``--no-rollback`` stops
  where it failed;
- full stack (4 GPUs per replica: the pools fill the three nodes): the same change rolls one
  replica at a time without surge, the plan says why, the pool never drops to zero; a failure
  resubmits the previous script; ``--no-rollback`` leaves the replica out.
"""

from __future__ import annotations

import pytest
from serving_support import ProxyWatch, Serving, free_port, install_standins

pytestmark = pytest.mark.slurm


def replicas(ids: dict[str, str], pool: str) -> dict[str, str]:
    return {role: job for role, job in ids.items() if role.startswith(pool + "-")}


def new_serving(new_sandbox_stack) -> Serving:
    stack = new_sandbox_stack()
    install_standins(stack.workdir)
    return Serving(stack, free_port(), partition="pools")  # every GPU there is this test's (plans count them)


def pool_lines(plan: dict, pool: str) -> list[str]:
    return next(p["lines"] for p in plan["rollouts"] if p["pool"] == pool)


def test_decode_scales_and_rolls_with_surge_and_a_failed_version_is_rolled_back(new_sandbox_stack) -> None:
    svc = new_serving(new_sandbox_stack)
    svc.write(1, 3)
    svc.apply()
    first = svc.id_of()
    assert set(first) == {"proxy", "prefill-0", "decode-0", "decode-1", "decode-2"}
    assert svc.source_jobs("decode") == [first[f"decode-{i}"] for i in range(3)]
    assert svc.proxy()["jobs"]["decode"] == svc.source_jobs("decode"), "the generated proxy runs with the endpoint files"
    info = svc.info(first["decode-2"])
    assert (info["MADINFRA_REPLICA_INDEX"], info["NODE_RANK"], info["SGLANG_NODE_RANK"]) == ("2", "4", "4")
    assert svc.plan_is_empty()

    # decode 3 -> 2: only replica 2 goes, after the proxy dropped it.
    svc.write(1, 2)
    plan = svc.plan()
    assert {c["address"]: c["action"] for c in plan["changes"]} == {
        "slurm/File/topology.env": "update",
        "slurm/Job/decode-2": "delete",
        "slurm/File/endpoints/decode": "update",
    }
    assert pool_lines(plan, "decode") == ["~ decode: 3 -> 2 replicas (replica 2 removed; replicas 0-1 untouched)"]
    assert plan["warnings"] == []
    assert "~ decode: 3 -> 2 replicas (replica 2 removed; replicas 0-1 untouched)" in svc.plan_text()
    with ProxyWatch(svc) as watch:
        svc.apply()
    assert watch.samples and not watch.violations, watch.violations
    second = svc.id_of()
    assert second == {k: v for k, v in first.items() if k != "decode-2"}, "the untouched replicas keep their jobs"
    assert svc.proxy()["jobs"]["decode"] == [first["decode-0"], first["decode-1"]]
    assert svc.plan_is_empty()

    # decode 2 -> 3: only replica 2 is new, and it joins once healthy.
    svc.write(1, 3)
    assert pool_lines(svc.plan(), "decode") == ["~ decode: 2 -> 3 replicas (replica 2 added; replicas 0-1 untouched)"]
    with ProxyWatch(svc) as watch:
        svc.apply()
    assert watch.samples and not watch.violations, watch.violations
    third = svc.id_of()
    assert {k: third[k] for k in second} == second and third["decode-2"] != first["decode-2"]
    assert svc.proxy()["jobs"]["decode"] == [third[f"decode-{i}"] for i in range(3)]
    assert svc.plan_is_empty()

    # A new env for decode rolls its replicas with surge (room: 12 GPUs, 4 in use).
    svc.write(1, 3, env={"decode": {"STANDIN_VERSION": "2"}})
    plan = svc.plan()
    assert pool_lines(plan, "decode") == ["-/+ decode[0..2] rolling, surge 1"]
    assert plan["gpus"]["peak"] == 5 and plan["gpus"]["free"] == 8
    text = svc.plan_text()
    assert "-/+ decode[0..2] rolling, surge 1" in text and "peak 5 during apply" in text
    with ProxyWatch(svc, min_ready={"decode": 3}) as watch:
        svc.apply()
    assert watch.samples and not watch.violations, watch.violations
    fourth = svc.id_of()
    assert (fourth["prefill-0"], fourth["proxy"]) == (first["prefill-0"], first["proxy"])
    assert all(fourth[f"decode-{i}"] != third[f"decode-{i}"] for i in range(3))
    assert svc.info(fourth["decode-1"])["STANDIN_VERSION"] == "2"
    assert svc.plan_is_empty()

    # A version that never turns healthy: the surge job is cancelled, the old ones never stopped.
    svc.write(1, 3, env={"decode": {"STANDIN_VERSION": "3", "STANDIN_FAIL_HEALTH": "1"}})
    with ProxyWatch(svc, min_ready={"decode": 3}) as watch:
        failed = svc.apply(check=False)
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert "slurm/Job/decode-0" in output and "rolled back" in output and "kept serving" in output
    assert watch.samples and not watch.violations, watch.violations
    assert svc.id_of() == fourth, "every replica still runs the previous version"
    assert svc.proxy()["jobs"]["decode"] == [fourth[f"decode-{i}"] for i in range(3)]
    again = svc.plan()
    assert pool_lines(again, "decode") == ["-/+ decode[0..2] rolling, surge 1"], "the next plan proposes the change again"

    # --no-rollback: the new job stays beside the old one, which still serves.
    failed = svc.apply("--no-rollback", check=False)
    assert failed.returncode != 0 and "--no-rollback" in failed.stdout + failed.stderr
    ids = svc.ids()
    assert ids["decode-0"][0] == fourth["decode-0"] and len(ids["decode-0"]) == 2
    assert svc.proxy()["jobs"]["decode"] == [fourth[f"decode-{i}"] for i in range(3)]

    # Back to the working version: the unhealthy job goes, and the old one only once a healthy
    # replacement serves in its place (never the unhealthy one).
    svc.write(1, 3, env={"decode": {"STANDIN_VERSION": "2"}})
    with ProxyWatch(svc, min_ready={"decode": 3}) as watch:
        svc.apply()
    assert watch.samples and not watch.violations, watch.violations
    healed = svc.id_of()
    assert healed["decode-0"] not in ids["decode-0"] and {k: healed[k] for k in ("decode-1", "decode-2")} == {k: fourth[k] for k in ("decode-1", "decode-2")}
    assert svc.proxy()["jobs"]["decode"] == [healed[f"decode-{i}"] for i in range(3)]
    assert svc.plan_is_empty()

    destroyed = svc.stack.cli("destroy", str(svc.stack.path), "--yes").stdout
    assert "Destroy complete!" in destroyed
    assert svc.stack.jobs() == []


def test_a_full_cluster_rolls_without_surge_and_a_failure_resubmits_the_previous_script(new_sandbox_stack) -> None:
    svc = new_serving(new_sandbox_stack)
    svc.write(1, 2, gpus=4)
    svc.apply()
    first = svc.id_of()
    assert svc.plan_is_empty()

    svc.write(1, 2, gpus=4, env={"decode": {"STANDIN_VERSION": "2"}})
    plan = svc.plan()
    line = "-/+ decode[0..1] rolling, 1 at a time, no surge (0 GPU(s) free, no node has 4 free for a surge replica)"
    assert pool_lines(plan, "decode") == [line]
    assert plan["warnings"] == []
    assert line in svc.plan_text()
    with ProxyWatch(svc, min_ready={"decode": 1}) as watch:
        svc.apply()
    assert watch.samples and not watch.violations, watch.violations
    second = svc.id_of()
    assert second["prefill-0"] == first["prefill-0"] and second["proxy"] == first["proxy"]
    assert all(second[f"decode-{i}"] != first[f"decode-{i}"] for i in range(2))
    assert svc.info(second["decode-0"])["STANDIN_VERSION"] == "2"
    assert svc.plan_is_empty()

    # A version that never turns healthy: decode-0 gets its previous script back.
    svc.write(1, 2, gpus=4, env={"decode": {"STANDIN_VERSION": "3", "STANDIN_FAIL_HEALTH": "1"}})
    with ProxyWatch(svc, min_ready={"decode": 1}) as watch:
        failed = svc.apply(check=False)
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert "slurm/Job/decode-0" in output and "rolled back" in output and "previous version serves again" in output
    assert watch.samples and not watch.violations, watch.violations
    third = svc.id_of()
    assert third["decode-1"] == second["decode-1"] and third["decode-0"] not in (first["decode-0"], second["decode-0"])
    assert svc.info(third["decode-0"])["STANDIN_VERSION"] == "2", "the resubmitted job runs the previous script"
    assert svc.proxy()["jobs"]["decode"] == [third["decode-0"], third["decode-1"]]
    assert pool_lines(svc.plan(), "decode")[0].startswith("-/+ decode[0..1] rolling, 1 at a time, no surge")

    # --no-rollback: decode-0 stays drained with the failing version queued or running.
    failed = svc.apply("--no-rollback", check=False)
    assert failed.returncode != 0 and "--no-rollback" in failed.stdout + failed.stderr
    assert svc.proxy()["jobs"]["decode"] == [third["decode-1"]]
    assert svc.remote("endpoints/decode").count("http://") == 1

    svc.stack.cli("destroy", str(svc.stack.path), "--yes")
    assert svc.stack.jobs() == []
