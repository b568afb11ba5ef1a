"""plan / apply / destroy / show / output / force-unlock through the real CLI (``madinfra.cli.main``)
against the in-memory provider registered as the ``slurm`` target."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENGINE_TESTS = Path(__file__).resolve().parent.parent / "engine"
sys.path.insert(0, str(ENGINE_TESTS))

import memory_provider  # noqa: E402

import madinfra.launchers as launchers  # noqa: E402
from madinfra.cli import main  # noqa: E402
from madinfra.provider_registry import unregister  # noqa: E402

STACK = """\
name: demo
slurm:
  nodes: {nodes}
  partition: {partition}
  gpus_per_node: 8
env_vars:
  MEM_EXTRA: "{extra}"
secret_env:
  TOKEN:
    from_env: DEMO_TOKEN
"""
SECRET = "s3cr3t-token-value"


class Cli:
    def __init__(self, root: Path, capsys, monkeypatch):
        self.root = root
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        self.store_path = root / "store.json"
        self.store = memory_provider.install(self.store_path)
        self.stack = root / "stack.yaml"
        self.write()

    def write(self, nodes: int = 1, partition: str = "p1", extra: str = "a") -> None:
        self.stack.write_text(STACK.format(nodes=nodes, partition=partition, extra=extra))

    def run(self, *args: str, input: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(input))
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        else:
            code = 0
        out, err = self.capsys.readouterr()
        return code, out, err

    def live(self) -> dict:
        self.store.reload()
        return self.store.resources

    def spawn(self, *args: str) -> subprocess.Popen:
        """The CLI in another process (same cwd, store file and environment)."""
        return subprocess.Popen(
            [sys.executable, str(ENGINE_TESTS / "memory_provider.py"), str(self.store_path), *args],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEMO_TOKEN", SECRET)
    monkeypatch.setattr(launchers, "compile", memory_provider.fake_compile, raising=False)
    yield Cli(tmp_path, capsys, monkeypatch)
    unregister("slurm")


def state_file(cli: Cli) -> Path:
    return cli.root / ".madinfra" / "state" / "demo.json"


def test_plan_shows_creates_summary_and_gpus_with_detailed_exit_codes(cli):
    code, out, _ = cli.run("plan", cli.stack)
    assert code == 0
    assert "# mem_job/demo will be created" in out and "+ spec.nodes = 1" in out
    assert "Plan: 4 to add, 0 to change, 0 to replace, 0 to destroy." in out
    assert "GPUs: 0 -> 8" in out
    assert cli.run("plan", cli.stack, "--detailed-exitcode")[0] == 2
    assert cli.live() == {}
    assert cli.run("apply", cli.stack, "--yes")[0] == 0
    code, out, _ = cli.run("plan", cli.stack, "--detailed-exitcode")
    assert code == 0 and "No changes. Your infrastructure matches the configuration." in out


def test_detailed_exit_code_is_1_on_error(cli):
    cli.stack.write_text("name: demo\nslurm:\n  nodes: zero\n")
    code, _, err = cli.run("plan", cli.stack, "--detailed-exitcode")
    assert code == 1 and "slurm.nodes" in err


def test_apply_asks_and_only_yes_proceeds(cli):
    code, out, err = cli.run("apply", cli.stack, input="y\n")
    assert code == 1
    assert "Do you want to perform these actions? Only 'yes' will be accepted:" in out
    assert "cancelled; nothing was changed" in err
    assert cli.live() == {} and not state_file(cli).exists()
    assert cli.run("apply", cli.stack, input="")[0] == 1
    code, out, _ = cli.run("apply", cli.stack, input="yes\n")
    assert code == 0 and "Apply complete! Resources: 4 added, 0 changed, 0 replaced, 0 destroyed." in out
    assert set(cli.live()) == {"mem_volume/demo-data", "mem_job/demo", "mem_service/demo-svc", "mem_config/demo-a"}
    assert "endpoint = http://demo-svc.memory:8000/v1" in out


def test_second_apply_in_a_row_has_nothing_to_do(cli):
    cli.run("apply", cli.stack, "--yes")
    code, out, _ = cli.run("apply", cli.stack)
    assert code == 0 and "No changes." in out and "Only 'yes'" not in out
    assert "Resources: 0 added, 0 changed, 0 replaced, 0 destroyed." in out


def test_update_replace_and_destroy_are_shown_field_by_field(cli):
    cli.run("apply", cli.stack, "--yes")
    cli.write(nodes=2, partition="p2", extra="")
    code, out, _ = cli.run("plan", cli.stack)
    assert "# mem_job/demo will be replaced" in out
    assert "-/+ mem_job/demo" in out
    assert '~ spec.partition: "p1" -> "p2"  # forces replacement' in out
    assert "~ spec.nodes: 1 -> 2" in out
    assert "# mem_config/demo-a will be destroyed" in out and "  - mem_config/demo-a" in out
    assert "# mem_volume/demo-data" not in out
    assert "Plan: 0 to add, 0 to change, 1 to replace, 1 to destroy." in out
    assert "GPUs: 8 -> 16" in out
    assert "Workloads that will restart: mem_job/demo (replaced)" in out
    assert "~ mem_job/demo" not in out and '~ spec.env[MEM_EXTRA].value: "a" -> ""' in out
    cli.write(nodes=2, partition="p1", extra="a")
    code, out, _ = cli.run("plan", cli.stack)
    assert "# mem_job/demo will be updated in-place" in out and "  ~ mem_job/demo" in out


def test_running_job_node_change_forces_replacement(cli):
    cli.run("apply", cli.stack, "--yes")
    cli.store.set_status("mem_job/demo", {"state": "RUNNING"})
    cli.write(nodes=2)
    _, out, _ = cli.run("plan", cli.stack)
    assert "~ spec.nodes: 1 -> 2  # forces replacement" in out
    assert "(spec.nodes forces replacement because the resource is running)" in out


def test_drift_is_shown_with_live_and_desired_values(cli):
    cli.run("apply", cli.stack, "--yes")
    cli.store.edit_spec("mem_service/demo-svc", "spec.port", 9000)
    cli.store.remove("mem_config/demo-a")
    _, out, _ = cli.run("plan", cli.stack)
    assert "# mem_service/demo-svc has changed outside madinfra and will be updated in-place" in out
    assert "(drift: values shown as live -> desired)" in out and "~ spec.port: 9000 -> 8000" in out
    assert "# mem_config/demo-a was deleted outside madinfra and will be created" in out
    _, out, _ = cli.run("plan", cli.stack, "--json")
    assert sorted(json.loads(out)["drift"]) == ["mem_config/demo-a", "mem_service/demo-svc"]


def test_json_plan_follows_the_documented_schema(cli):
    cli.run("apply", cli.stack, "--yes")
    cli.write(partition="p2")
    code, out, _ = cli.run("plan", cli.stack, "--json", "--detailed-exitcode")
    assert code == 2
    data = json.loads(out)
    assert data["format_version"] == "1.3"
    assert set(data) >= {"stack", "target", "stack_file", "destroy", "only", "has_changes", "summary", "gpus", "changes", "restarts", "drift", "warnings", "fingerprints"}
    assert data["summary"] == {"add": 0, "change": 0, "replace": 1, "destroy": 0}
    (change,) = data["changes"]
    assert change["address"] == "mem_job/demo" and change["action"] == "replace" and change["symbol"] == "-/+"
    assert change["replace_paths"] == ["spec.partition"]
    assert {"path": "spec.partition", "before": "p1", "after": "p2", "forces_replacement": True, "details": []} in change["fields"]
    assert change["before"]["spec"]["partition"] == "p1" and change["after"]["spec"]["partition"] == "p2"
    assert data["restarts"] == [{"address": "mem_job/demo", "action": "replace"}]
    assert data["gpus"] == {"before": 8, "after": 8, "peak": None, "free": None}
    assert data["rollouts"] == []
    assert data["fingerprints"]["live"].startswith("sha256:") and data["fingerprints"]["stack_file"].startswith("sha256:")
    doc = (Path(__file__).resolve().parents[2] / "docs" / "plan-json.md").read_text()
    for key in list(data) + list(change):
        assert f"`{key}`" in doc, key


def test_saved_plan_applies_exactly_and_is_refused_when_stale(cli):
    plan_file = cli.root / "plan.json"
    code, out, _ = cli.run("plan", cli.stack, "--out", plan_file)
    assert code == 0 and f"madinfra apply {plan_file}" in out
    code, out, _ = cli.run("apply", plan_file)
    assert code == 0 and "Only 'yes'" not in out and "4 added" in out
    cli.write(nodes=2)
    cli.run("plan", cli.stack, "--out", plan_file)
    cli.store.edit_spec("mem_service/demo-svc", "spec.port", 1)
    code, _, err = cli.run("apply", plan_file)
    assert code == 1 and "stale: the live resources of stack 'demo' changed since it was made" in err
    assert cli.live()["mem_job/demo"]["spec"]["spec"]["nodes"] == 1
    cli.run("plan", cli.stack, "--out", plan_file)
    cli.write(nodes=3)
    code, _, err = cli.run("apply", plan_file)
    assert code == 1 and f"stale: the stack file {cli.stack} changed since it was made" in err
    assert cli.run("apply", plan_file, "--only", "demo")[0] == 1


def test_saved_destroy_plan(cli):
    cli.run("apply", cli.stack, "--yes")
    plan_file = cli.root / "destroy.json"
    _, out, _ = cli.run("plan", cli.stack, "--destroy", "--out", plan_file)
    assert "0 to add, 0 to change, 0 to replace, 4 to destroy." in out
    assert cli.run("apply", plan_file)[0] == 0
    assert cli.live() == {}


def test_partial_failure_exits_non_zero_and_the_next_plan_shows_what_is_left(cli):
    cli.store.set("fail", {"mem_job/demo": "partition p1 is down"})
    code, out, err = cli.run("apply", cli.stack, "--yes")
    assert code == 1
    assert "mem_job/demo: failed: partition p1 is down" in out
    assert "mem_service/demo-svc was skipped because mem_job/demo did not complete" in out
    assert "1 change(s) failed and 1 were skipped" in err and "madinfra plan" in err
    assert set(cli.live()) == {"mem_volume/demo-data", "mem_config/demo-a"}
    _, out, _ = cli.run("plan", cli.stack, "--json")
    assert [(c["action"], c["address"]) for c in json.loads(out)["changes"]] == [("create", "mem_job/demo"), ("create", "mem_service/demo-svc")]
    cli.store.set("fail", {})
    assert cli.run("apply", cli.stack, "--yes")[0] == 0
    assert cli.run("plan", cli.stack, "--detailed-exitcode")[0] == 0


def test_destroy_finds_everything_without_state_and_is_idempotent(cli):
    cli.run("apply", cli.stack, "--yes")
    state_file(cli).unlink()
    code, out, err = cli.run("destroy", cli.stack, input="no\n")
    assert code == 1 and "Do you really want to destroy all resources of stack 'demo'? Only 'yes' will be accepted:" in out
    assert len(cli.live()) == 4
    code, out, _ = cli.run("destroy", cli.stack, "--yes")
    assert code == 0 and "Destroy complete! Resources: 4 destroyed." in out
    assert cli.live() == {}
    assert json.loads(state_file(cli).read_text())["resources"] == []
    code, out, _ = cli.run("destroy", cli.stack)
    assert code == 0 and "No changes." in out


def test_show_status_and_output(cli):
    cli.run("apply", cli.stack, "--yes")
    cli.store.edit_spec("mem_config/demo-a", "spec.value", "z")
    for command in ("show", "status"):
        code, out, _ = cli.run(command, cli.stack)
        assert code == 0
        assert "mem_job/demo" in out and "in sync" in out and "changed outside madinfra" in out
        assert "endpoint = http://demo-svc.memory:8000/v1" in out and "GPUs in use: 8" in out
    _, out, _ = cli.run("show", cli.stack, "--json")
    rows = {r["address"]: r for r in json.loads(out)["resources"]}
    assert rows["mem_job/demo"]["state"]["provider_id"] == rows["mem_job/demo"]["live"]["provider_id"]
    assert cli.run("output", cli.stack) == (0, "endpoint = http://demo-svc.memory:8000/v1\n", "")
    assert cli.run("output", cli.stack, "endpoint")[1] == "http://demo-svc.memory:8000/v1\n"
    assert json.loads(cli.run("output", cli.stack, "--json")[1]) == {"endpoint": "http://demo-svc.memory:8000/v1"}
    code, _, err = cli.run("output", cli.stack, "nope")
    assert code == 1 and "no output named 'nope' (outputs: endpoint)" in err


def test_only_limits_apply_to_a_resource_and_its_dependencies(cli):
    code, out, _ = cli.run("apply", cli.stack, "--yes", "--only", "demo")
    assert code == 0 and "Resources: 2 added" in out
    assert set(cli.live()) == {"mem_volume/demo-data", "mem_job/demo"}
    code, _, err = cli.run("plan", cli.stack, "--only", "nope")
    assert code == 1 and "--only nope matches no resource" in err and "mem_service/demo-svc" in err


def test_replace_reruns_an_unchanged_resource_and_survives_a_saved_plan(cli):
    assert cli.run("apply", cli.stack, "--yes")[0] == 0
    before = cli.live()["mem_job/demo"]["provider_id"]
    code, out, _ = cli.run("plan", cli.stack, "--replace", "demo", "--detailed-exitcode")
    assert code == 2 and "Plan: 0 to add, 0 to change, 1 to replace, 0 to destroy." in out
    assert "replacement requested with --replace" in out
    plan_file = cli.root / "replace.plan"
    assert cli.run("plan", cli.stack, "--replace", "mem_job/demo", "--out", plan_file)[0] == 0
    code, out, _ = cli.run("apply", plan_file)
    assert code == 0 and "1 replaced" in out
    assert cli.live()["mem_job/demo"]["provider_id"] != before
    assert cli.run("plan", cli.stack, "--detailed-exitcode")[0] == 0
    code, _, err = cli.run("apply", plan_file, "--replace", "demo")
    assert code == 1 and "--replace cannot be combined with the saved plan" in err


def test_secrets_never_appear_in_output_plan_files_or_state(cli, monkeypatch):
    texts = []
    plan_file = cli.root / "plan.json"
    for args in (("plan", cli.stack), ("plan", cli.stack, "--json"), ("plan", cli.stack, "--out", plan_file), ("apply", cli.stack, "--yes"), ("show", cli.stack), ("output", cli.stack)):
        code, out, err = cli.run(*args)
        assert code == 0
        texts += [out, err]
    texts += [plan_file.read_text(), state_file(cli).read_text(), cli.store_path.read_text()]
    assert not any(SECRET in text for text in texts)
    assert "sha256:" in state_file(cli).read_text()
    monkeypatch.setenv("DEMO_TOKEN", "rotated-token-value")
    _, out, _ = cli.run("plan", cli.stack)
    assert "~ spec.secret_env.TOKEN: \"sha256:" in out and "rotated-token-value" not in out
    monkeypatch.delenv("DEMO_TOKEN")
    code, _, err = cli.run("plan", cli.stack)
    assert code == 1 and "DEMO_TOKEN" in err and "not set" in err


def test_a_provider_error_quoting_a_secret_is_redacted(cli, monkeypatch):
    from madinfra.errors import ProviderError

    def failing_read(self, stack):
        raise ProviderError(f"slurm/Job/worker: sbatch rejected the job: export DEMO_TOKEN={SECRET}: bad line")

    monkeypatch.setattr(memory_provider.MemoryProvider, "read", failing_read)
    code, out, err = cli.run("plan", cli.stack)
    assert code == 1 and SECRET not in out + err
    assert "sbatch rejected the job: export DEMO_TOKEN=" in err


def test_corrupt_state_is_a_clear_error(cli):
    cli.run("apply", cli.stack, "--yes")
    state_file(cli).write_text('{"version": 1, "stack": "de')
    code, _, err = cli.run("plan", cli.stack)
    assert code == 1 and str(state_file(cli).relative_to(cli.root)) in err and "backup" in err
    assert "Traceback" not in err


def test_force_unlock(cli):
    lock = cli.root / ".madinfra" / "state" / "demo.lock"
    assert cli.run("force-unlock", cli.stack)[1] == "Stack 'demo' is not locked.\n"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 4242, "host": "login9", "time": "t", "command": "madinfra apply"}))
    code, out, _ = cli.run("force-unlock", cli.stack)
    assert code == 0 and "held by pid 4242 on host login9" in out and not lock.exists()


def test_provider_options_reach_the_provider(cli, monkeypatch):
    seen = []
    factory = memory_provider.MemoryProvider

    def spy(options=None):
        seen.append(options)
        return factory(options, cli.store)

    from madinfra.provider_registry import register

    register("slurm", spy)
    cli.run("plan", cli.stack, "--ssh-target", "me@login:2222", "--insecure-skip-host-key-check", "--context", "ctx", "--kubeconfig", "/k", "--state-dir", "st")
    (options,) = seen
    assert (options.ssh_target, options.insecure_skip_host_key_check, options.kube_context, options.kubeconfig) == ("me@login:2222", True, "ctx", "/k")
    assert options.stack_dir == cli.root.resolve() and options.work_dir == Path("st").parent / ".madinfra"


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_concurrent_apply_waits_for_the_lock_then_names_the_holder(cli):
    cli.store.set("sleep", {"mem_volume/demo-data": 30})
    lock = cli.root / ".madinfra" / "state" / "demo.lock"
    holder = cli.spawn("apply", "stack.yaml", "--yes")
    try:
        wait_for(lock.exists)
        started = time.monotonic()
        code, _, err = cli.run("apply", cli.stack, "--yes", "--lock-timeout", "1")
        assert code == 1 and time.monotonic() - started >= 0.9
        assert f"locked by pid {holder.pid} on host {socket.gethostname()}" in err
        assert "madinfra apply stack.yaml" in err and "force-unlock" in err
        assert err.count("Waiting for the lock of stack 'demo'") == 1, "one notice when the wait starts, then every 10 s"
    finally:
        holder.kill()
        holder.communicate(timeout=20)


def test_apply_killed_between_changes_loses_nothing(cli):
    cli.store.set("sleep", {"mem_job/demo": 30})
    victim = cli.spawn("apply", "stack.yaml", "--yes")
    try:
        wait_for(lambda: "mem_volume/demo-data" in json.loads(cli.store_path.read_text())["resources"])
        wait_for(lambda: state_file(cli).exists() and "demo-data" in state_file(cli).read_text())
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=20)
    state = json.loads(state_file(cli).read_text())
    assert [r["name"] for r in state["resources"]] == ["demo-data"]
    cli.store.set("sleep", {})
    _, out, _ = cli.run("plan", cli.stack, "--json")
    assert [(c["action"], c["address"]) for c in json.loads(out)["changes"]] == [
        ("create", "mem_job/demo"),
        ("create", "mem_service/demo-svc"),
        ("create", "mem_config/demo-a"),
    ]
    code, out, err = cli.run("apply", cli.stack, "--yes")
    assert code == 0 and f"stale lock of stack 'demo' left by pid {victim.pid}" in err
    assert cli.run("plan", cli.stack, "--detailed-exitcode")[0] == 0


def test_suggested_commands_carry_the_connection_flags_so_they_work_as_printed():
    from madinfra.cli.engine_cmds import connection_flags
    from madinfra.resources import ProviderOptions

    assert connection_flags(ProviderOptions(ssh_target="/tmp/t arget.json", insecure_skip_host_key_check=True)) == " --ssh-target '/tmp/t arget.json' --insecure-skip-host-key-check"
    assert connection_flags(ProviderOptions(kube_context="lab", kubeconfig="/k")) == " --context lab --kubeconfig /k"
    assert connection_flags(ProviderOptions()) == ""


def _interrupt_when(proc: subprocess.Popen, predicate, times: int = 1) -> tuple[str, str]:
    """Send SIGINT to the spawned apply once ``predicate`` holds (``times`` times, 0.3 s apart)."""
    try:
        wait_for(predicate)
        for _ in range(times):
            os.kill(proc.pid, signal.SIGINT)
            time.sleep(0.3)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=20)
    return out, err


def _in_flight(cli: Cli) -> list | None:
    return json.loads(cli.store_path.read_text()).get("in_flight")


def test_ctrl_c_finishes_the_change_in_flight_and_starts_nothing_else(cli):
    cli.store.set("sleep", {"mem_job/demo": 2})
    victim = cli.spawn("apply", "stack.yaml", "--yes")
    out, err = _interrupt_when(victim, lambda: _in_flight(cli) == ["create", "mem_job/demo"])
    assert victim.returncode == 130, (out, err)
    assert "Interrupt received: finishing the change in flight" in err
    assert "Apply interrupted. Done: mem_volume/demo-data (created), mem_job/demo (created)." in err
    assert "Not started: mem_service/demo-svc, mem_config/demo-a." in err and "madinfra plan stack.yaml" in err
    assert "Traceback" not in err
    assert set(cli.live()) == {"mem_volume/demo-data", "mem_job/demo"}
    state = json.loads(state_file(cli).read_text())
    assert sorted(r["name"] for r in state["resources"]) == ["demo", "demo-data"]
    assert not any(r.get("tainted") for r in state["resources"])
    cli.store.set("sleep", {})
    _, out, _ = cli.run("plan", cli.stack, "--json")
    changes = json.loads(out)["changes"]
    assert [(c["action"], c["address"], c["reasons"]) for c in changes] == [
        ("create", "mem_service/demo-svc", []),
        ("create", "mem_config/demo-a", []),
    ]


def test_a_second_ctrl_c_stops_at_once_and_state_says_the_change_was_interrupted(cli):
    cli.run("apply", cli.stack, "--yes")
    cli.write(partition="p2")
    cli.store.set("sleep", {"mem_job/demo": 30})
    victim = cli.spawn("apply", "stack.yaml", "--yes")
    out, err = _interrupt_when(victim, lambda: _in_flight(cli) == ["delete", "mem_job/demo"], times=2)
    assert victim.returncode == 130, (out, err)
    assert "Apply interrupted. Done: nothing." in err
    assert "mem_job/demo (interrupted (Ctrl-C) while replacing: destroying the old one; it may be half done)" in err
    state = {r["name"]: r for r in json.loads(state_file(cli).read_text())["resources"]}
    assert state["demo"]["tainted"] and "interrupted (Ctrl-C)" in state["demo"]["error"]
    cli.store.set("sleep", {})
    _, out, _ = cli.run("plan", cli.stack)
    assert "# mem_job/demo will be replaced" in out and "the previous apply of this resource failed" in out
    assert "changed outside madinfra" not in out
    _, out, _ = cli.run("show", cli.stack, "--json")
    assert {r["address"]: r["sync"] for r in json.loads(out)["resources"]}["mem_job/demo"] == "last apply interrupted"


def test_debug_true_writes_what_is_deployed_into_output_dir_before_applying(cli):
    cli.stack.write_text(cli.stack.read_text() + "debug: true\n")
    cli.store.set("fail", {"mem_job/demo": "partition p1 is down"})
    code, _, err = cli.run("apply", cli.stack, "--yes")
    assert code == 1, "the job fails, yet what was sent is on disk to read"
    out_dir = cli.root / "slurm_results"
    assert f"debug: wrote 4 file(s) to {out_dir} (slurm.output_dir)" in err
    job = json.loads((out_dir / "mem_job-demo.json").read_text())
    assert job["spec"]["partition"] == "p1"
    assert SECRET not in "".join(p.read_text() for p in out_dir.iterdir())


def test_without_debug_nothing_is_written_beside_the_stack(cli):
    cli.run("apply", cli.stack, "--yes")
    assert not (cli.root / "slurm_results").exists()


def test_refresh_records_drift_adoption_and_deletions_without_changing_the_cluster(cli):
    cli.run("apply", cli.stack, "--yes")
    cli.store.edit_spec("mem_service/demo-svc", "spec.port", 9000)
    cli.store.remove("mem_config/demo-a")
    before = cli.live()
    recorded_before = state_file(cli).read_text()
    code, out, err = cli.run("refresh", cli.stack, input="no\n")
    assert code == 1 and "Refresh cancelled; state was not changed." in err
    assert state_file(cli).read_text() == recorded_before
    assert "madinfra will record the following in the state of stack 'demo' (the cluster is not changed):" in out
    assert "  ~ mem_service/demo-svc: record drift (spec.port)" in out
    assert "  - mem_config/demo-a: forget (no longer on the cluster)" in out
    code, out, _ = cli.run("refresh", cli.stack, "--yes")
    assert code == 0 and "Refresh complete! State: 2 recorded." in out
    assert cli.live() == before, "refresh changes nothing on the cluster"
    _, out, _ = cli.run("plan", cli.stack)
    assert "# mem_service/demo-svc will be updated in-place" in out and "changed outside" not in out
    assert "# mem_config/demo-a will be created" in out and "deleted outside" not in out
    assert cli.run("refresh", cli.stack)[1].startswith("No changes. State matches the cluster.")


def test_refresh_adopts_what_runs_when_state_was_lost(cli):
    cli.run("apply", cli.stack, "--yes")
    state_file(cli).unlink()
    code, out, _ = cli.run("refresh", cli.stack, "--json", "--yes")
    data = json.loads(out)
    assert code == 0 and data["recorded"] == 4
    assert {u["action"] for u in data["updates"]} == {"adopt"}
    recorded = json.loads(state_file(cli).read_text())["resources"]
    assert sorted(r["kind"] + "/" + r["name"] for r in recorded) == sorted(u["address"] for u in data["updates"])
    assert cli.run("plan", cli.stack, "--detailed-exitcode")[0] == 0


def test_refresh_json_without_yes_refuses_to_record(cli):
    cli.run("apply", cli.stack, "--yes")
    state_file(cli).unlink()
    code, _, err = cli.run("refresh", cli.stack, "--json")
    assert code == 1 and "refresh --json records nothing without --yes" in err
    assert not state_file(cli).exists()


def test_a_ray_head_in_a_users_command_is_a_plan_warning(cli):
    cli.stack.write_text(STACK.format(nodes=1, partition="p1", extra="a") + "roles:\n  worker:\n    command: ray start --head --block\n")
    code, out, _ = cli.run("plan", cli.stack)
    assert code == 0
    assert "Warning: roles.worker.command starts a Ray head (`ray start --head`): madinfra runs it as part of that workload" in " ".join(out.split())
