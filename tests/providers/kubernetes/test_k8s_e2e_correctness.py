"""The defects a review of the Kubernetes provider found, each shown on the real sandbox through
the real CLI: --replace, canonical values, Pulumi's hidden state, ConfigMaps in place, namespace
changes, drift repair, replacing a Job, finished Jobs removed by their TTL, cluster domain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from k8s_sandbox import K8sStack, wait_for

pytestmark = pytest.mark.k8s_e2e


def training(nodes: int = 1, **k8s) -> dict:
    return {
        "model": {"image": "rocm/pytorch:latest", "script": "train.py"},
        "distributed": {"launcher": "torchrun", "nnodes": nodes, "nproc_per_node": 1},
        "k8s": {"namespace": "default", "gpu_count": 1, "cpu": "2", "memory": "4Gi", "cpu_limit": "4", "memory_limit": "8Gi", "ready_timeout": 120, **k8s},
    }


def vllm(replicas: int = 2, **k8s) -> dict:
    return {
        "model": {"image": "rocm/vllm:latest", "model_path": "/models/m"},
        "distributed": {"launcher": "vllm", "nnodes": replicas, "nproc_per_node": 1},
        "service": {"health_check": {"timeout": 120}},
        "k8s": {"namespace": "default", "gpu_count": 1, "cpu": "2", "memory": "4Gi", "cpu_limit": "4", "memory_limit": "8Gi", "ready_timeout": 120, **k8s},
    }


def job_of(stack: K8sStack) -> dict:
    jobs = stack.objects("Job")
    assert len(jobs) == 1, jobs
    return jobs[0]


def complete(job: dict) -> bool:
    return any(c["type"] == "Complete" and c["status"] == "True" for c in (job.get("status") or {}).get("conditions") or [])


def test_replace_recreates_an_unchanged_job(k8s_stack: K8sStack) -> None:
    """Review point 1: `apply --replace worker` must recreate the Job, not report Pulumi's "same"."""
    stack = k8s_stack
    stack.write(training())
    stack.apply()
    before = job_of(stack)["metadata"]["uid"]
    planned = stack.plan("--replace", "worker")
    assert "Plan: 0 to add, 0 to change, 1 to replace, 0 to destroy." in planned.stdout, planned.stdout
    applied = stack.apply("--replace", "worker")
    assert "1 replaced" in applied.stdout, applied.stdout
    after = job_of(stack)["metadata"]["uid"]
    assert after != before, "the Job was not recreated"
    stack.assert_plan_empty()


def test_non_canonical_values_do_not_replace_training_on_every_apply(k8s_stack: K8sStack) -> None:
    """Review point 2: cpu 0.5, memory 1024Mi and an empty env value read back as 500m, 1Gi and
    no value; the next plan must still be empty and a second apply must not touch the Job."""
    stack = k8s_stack
    spec = training(cpu="0.5", memory="1024Mi", cpu_limit="1.5", memory_limit="2048Mi")
    spec["env_vars"] = {"EMPTY_ON_PURPOSE": "", "ZERO": "0"}
    stack.write(spec)
    stack.apply()
    job = job_of(stack)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "500m" and container["resources"]["requests"]["memory"] == "1Gi"
    assert {"name": "EMPTY_ON_PURPOSE"} in container["env"]
    stack.assert_plan_empty()
    again = stack.apply()
    assert "0 added, 0 changed, 0 replaced" in again.stdout or "No changes" in again.stdout, again.stdout
    assert job_of(stack)["metadata"]["uid"] == job["metadata"]["uid"]


def test_destroy_from_an_empty_directory_removes_every_labelled_object(k8s_stack: K8sStack, tmp_path: Path) -> None:
    """Review point 3: no madinfra state and no Pulumi state in the directory destroy runs in."""
    stack = k8s_stack
    stack.write(vllm())
    stack.apply()
    assert stack.sandbox.stack_objects(stack.name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planned = stack.cli("plan", str(stack.path), "--destroy", cwd=elsewhere)
    assert "not in Pulumi's state; apply deletes it through the Kubernetes API" in planned.stdout, planned.stdout
    destroyed = stack.cli("destroy", str(stack.path), "--yes", cwd=elsewhere)
    assert "Destroy complete! Resources: 2 destroyed." in destroyed.stdout, destroyed.stdout
    wait_for(lambda: stack.sandbox.stack_objects(stack.name) == [], "every object labelled with the stack to be gone")


def test_apply_from_another_directory_adopts_live_objects_in_place(k8s_stack: K8sStack, tmp_path: Path) -> None:
    """Review point 3: objects Pulumi does not know are adopted (updated in place), said so in the plan."""
    stack = k8s_stack
    stack.write(vllm(replicas=1))
    stack.apply()
    deployment = stack.objects("Deployment")[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stack.write(vllm(replicas=2))
    planned = stack.cli("plan", str(stack.path), cwd=elsewhere)
    assert "exists on the cluster but not in Pulumi's state" in planned.stdout and "adopts it in place" in planned.stdout, planned.stdout
    stack.cli("apply", str(stack.path), "--yes", cwd=elsewhere)
    after = stack.objects("Deployment")[0]
    assert after["metadata"]["uid"] == deployment["metadata"]["uid"] and after["spec"]["replicas"] == 2
    assert stack.cli("plan", str(stack.path), "--detailed-exitcode", cwd=elsewhere, check=False).returncode == 0
    # The first directory's Pulumi state still names the objects: its plan says nothing changed.
    stack.assert_plan_empty()


def test_a_changed_configmap_is_updated_in_place(k8s_stack: K8sStack) -> None:
    """Review point 4: pulumi-kubernetes replaces ConfigMaps unless told they are mutable."""
    stack = k8s_stack
    scripts = stack.workdir / "scripts"
    scripts.mkdir()
    (scripts / "serve.sh").write_text("echo one\n")
    spec = vllm(replicas=1)
    spec["model"]["scripts_dir"] = "scripts"
    stack.write(spec)
    stack.apply()
    configmap = next(c for c in stack.objects("ConfigMap") if c["metadata"]["name"].endswith("-scripts"))
    (scripts / "serve.sh").write_text("echo two\n")
    planned = stack.plan()
    assert f"~ k8s/ConfigMap/{configmap['metadata']['name']}" in planned.stdout, planned.stdout
    stack.apply()
    after = stack.sandbox.get("ConfigMap", "default", configmap["metadata"]["name"])
    assert after["metadata"]["uid"] == configmap["metadata"]["uid"] and "echo two" in json.dumps(after["data"])
    stack.assert_plan_empty()


def test_a_namespace_change_deletes_the_objects_in_the_old_namespace(k8s_stack: K8sStack) -> None:
    """Review point 5: the plan shows the old namespace's objects going, and they go."""
    stack = k8s_stack
    stack.sandbox.ensure_namespace("team-a")
    stack.sandbox.ensure_namespace("team-b")
    stack.write(vllm(replicas=1, namespace="team-a"))
    stack.apply()
    stack.write(vllm(replicas=1, namespace="team-b"))
    planned = stack.plan()
    assert 'metadata.namespace: "team-a" -> "team-b"' in planned.stdout and "forces replacement" in planned.stdout, planned.stdout
    assert "2 to replace" in planned.stdout, planned.stdout
    stack.apply()
    assert stack.objects("Deployment", "team-a") == [] and stack.objects("Service", "team-a") == []
    assert len(stack.objects("Deployment", "team-b")) == 1
    stack.assert_plan_empty()


def test_drift_is_repaired_and_the_plan_is_empty_afterwards(k8s_stack: K8sStack) -> None:
    """Review point 6: kubectl scale, an edited env value and a removed label, each by another
    field manager; apply takes the fields back instead of conflicting or leaving them."""
    stack = k8s_stack
    stack.write(vllm(replicas=2))
    stack.apply()
    apps = stack.sandbox.client("AppsV1Api")
    name = stack.objects("Deployment")[0]["metadata"]["name"]
    apps.patch_namespaced_deployment_scale(name, "default", {"spec": {"replicas": 4}}, field_manager="kubectl")
    deployment = stack.objects("Deployment")[0]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    index = next(i for i, e in enumerate(env) if e["name"] == "MAD_LAUNCHER_TYPE")
    apps.patch_namespaced_deployment(
        name,
        "default",
        [
            {"op": "replace", "path": f"/spec/template/spec/containers/0/env/{index}/value", "value": "edited"},
            {"op": "remove", "path": "/metadata/labels/madinfra.io~1role"},
        ],
        field_manager="kubectl-edit",
    )
    planned = stack.plan()
    assert "changed outside madinfra" in planned.stdout, planned.stdout
    assert "spec.replicas: 4 -> 2" in planned.stdout and '"edited"' in planned.stdout, planned.stdout
    stack.apply()
    after = stack.objects("Deployment")[0]
    assert after["spec"]["replicas"] == 2
    assert next(e for e in after["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "MAD_LAUNCHER_TYPE")["value"] == "vllm"
    assert "madinfra.io/role" in after["metadata"]["labels"]
    stack.assert_plan_empty()


def test_replacing_a_job_waits_for_the_old_one_and_its_pods(k8s_stack: K8sStack) -> None:
    """Review point 7: the new Job is created only after the old Job and its pods are gone, and
    readiness looks only at the new Job's pods (matched by owner UID)."""
    stack = k8s_stack
    stack.write(training(nodes=2))
    stack.apply()
    old = job_of(stack)["metadata"]["uid"]
    changed = training(nodes=2)
    changed["env_vars"] = {"RUN": "2"}
    stack.write(changed)
    assert "1 to replace" in stack.plan().stdout
    stack.apply()
    new = job_of(stack)["metadata"]["uid"]
    assert new != old
    owners = {ref["uid"] for p in stack.objects("Pod") for ref in p["metadata"].get("ownerReferences", [])}
    assert owners == {new}, "pods of the replaced Job are still there"
    stack.assert_plan_empty()


def test_a_finished_job_removed_by_its_ttl_is_not_run_again(k8s_stack: K8sStack) -> None:
    """Review point 8: with ttl_seconds_after_finished the Job disappears after it completes; the
    next plan says it finished instead of creating it again, and --replace runs it again."""
    stack = k8s_stack
    stack.write(training(ttl_seconds_after_finished=2))
    stack.apply()
    wait_for(lambda: stack.objects("Job") == [], "the TTL controller to remove the finished Job", timeout=90)
    planned = stack.plan("--detailed-exitcode", check=False)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "finished" in planned.stdout and "it is not run again" in planned.stdout, planned.stdout
    rerun = stack.apply("--replace", "worker")
    assert "1 added" in rerun.stdout, rerun.stdout


def test_the_cluster_domain_reaches_every_peer_address(k8s_stack: K8sStack) -> None:
    stack = k8s_stack
    stack.write(training(nodes=2, cluster_domain="gpu.example"))
    stack.apply()
    job = job_of(stack)
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"].endswith(".default.svc.gpu.example")
    stack.assert_plan_empty()


def test_destroy_then_apply_again_in_the_same_directory(k8s_stack: K8sStack) -> None:
    """Pulumi's state then exists but is empty: the new objects must still be created (a targeted
    refresh refuses targets that are not in the state yet)."""
    stack = k8s_stack
    stack.write(training(nodes=2))
    stack.apply()
    stack.cli("destroy", str(stack.path), "--yes")
    again = stack.apply()
    assert "Apply complete! Resources: 2 added" in again.stdout, again.stdout
    stack.assert_plan_empty()


def _scripts_stack(stack: K8sStack) -> None:
    scripts = stack.workdir / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / "serve.sh").write_text("echo one\n")
    spec = vllm(replicas=1)
    spec["model"]["scripts_dir"] = "scripts"
    stack.write(spec)
    stack.apply()
    (scripts / "serve.sh").write_text("echo two\n")


def _apply_in_process(stack: K8sStack, monkeypatch, capsys) -> tuple[int, str]:
    """`madinfra apply` in this process, so a test can change how Pulumi is driven."""
    from madinfra.cli import main

    for key, value in stack.sandbox.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(stack.workdir)
    with pytest.raises(SystemExit) as exit_info:
        main(["apply", str(stack.path), "--yes"])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out + captured.err


def test_apply_stops_before_changing_anything_when_pulumi_would_take_another_step(k8s_stack: K8sStack, monkeypatch, capsys) -> None:
    """Pulumi's replace rules made to differ from the planner's (as an upgrade of
    pulumi-kubernetes could): the plan says update, Pulumi's preview says replace, nothing moves."""
    import madinfra_kubernetes.program as program

    stack = k8s_stack
    _scripts_stack(stack)
    configmap = next(c for c in stack.objects("ConfigMap") if c["metadata"]["name"].endswith("-scripts"))
    rules = program.replace_on_changes
    monkeypatch.setattr(program, "replace_on_changes", lambda kind: rules(kind) + (["data"] if kind.endswith("ConfigMap") else []))
    code, output = _apply_in_process(stack, monkeypatch, capsys)
    assert code == 1
    assert "Nothing was changed: Pulumi would not carry out the plan as shown" in output, output
    assert f"k8s/ConfigMap/{configmap['metadata']['name']}: the plan says update, Pulumi plans 'replace'" in output, output
    after = stack.sandbox.get("ConfigMap", "default", configmap["metadata"]["name"])
    assert after["metadata"]["uid"] == configmap["metadata"]["uid"] and "echo one" in json.dumps(after["data"])


def test_apply_fails_loudly_when_pulumi_took_another_step_than_planned(k8s_stack: K8sStack, monkeypatch, capsys) -> None:
    """Terraform's "inconsistent final plan": the preview is made to agree, the up does not;
    the steps Pulumi really took are compared after the up and the resource is marked failed."""
    import madinfra_kubernetes.automation as automation
    import madinfra_kubernetes.program as program

    stack = k8s_stack
    _scripts_stack(stack)
    configmap = next(c for c in stack.objects("ConfigMap") if c["metadata"]["name"].endswith("-scripts"))
    rid = f"k8s/ConfigMap/{configmap['metadata']['name']}"
    rules = program.replace_on_changes
    monkeypatch.setattr(program, "replace_on_changes", lambda kind: rules(kind) + (["data"] if kind.endswith("ConfigMap") else []))
    agreeing = lambda stack, targets, replace=None: {program.resource_id_from_urn(t): "update" for t in targets if "pulumi:providers" not in t}  # noqa: E731
    monkeypatch.setattr(automation, "preview", agreeing)
    code, output = _apply_in_process(stack, monkeypatch, capsys)
    assert code == 1
    assert f"Pulumi did not carry out the plan as shown ({rid}: the plan says update, Pulumi did 'replace')" in output, output
    state = json.loads((stack.workdir / ".madinfra" / "state" / f"{stack.name}.json").read_text())
    record = next(r for r in state["resources"] if f"{r['kind']}/{r['name']}" == rid)
    assert record["tainted"] is True
