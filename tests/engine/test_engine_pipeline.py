from pathlib import Path

import pytest
from memory_provider import MemoryProvider, fake_compile

import madinfra.launchers as launchers
from madinfra.config import load
from madinfra.engine.pipeline import collect_outputs, compute_plan, open_stack, rules_for, stack_fingerprint, work_dir_for
from madinfra.errors import MadinfraError
from madinfra.resources import ProviderOptions

STACK_YAML = "name: demo\nslurm:\n  nodes: 1\n  partition: p1\nenv_vars:\n  MEM_EXTRA: a\n"


@pytest.fixture
def stack_file(tmp_path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(STACK_YAML)
    return path


@pytest.fixture(autouse=True)
def compiled(monkeypatch):
    calls = []

    def compile_spec(spec):
        calls.append(spec.name)
        return fake_compile(spec)

    monkeypatch.setattr(launchers, "compile", compile_spec, raising=False)
    return calls


def test_pipeline_compiles_asks_the_provider_and_plans(stack_file, provider, compiled):
    spec = load(stack_file)
    plan = compute_plan(spec, provider, None, stack_file=stack_file, fingerprint=stack_fingerprint(stack_file))
    assert compiled == ["demo"]
    assert [c.resource_id for c in plan.changes] == ["mem_volume/demo-data", "mem_job/demo", "mem_service/demo-svc", "mem_config/demo-a"]
    assert plan.stack == "demo" and plan.target == "slurm" and plan.stack_file == str(stack_file.resolve())
    assert plan.stack_fingerprint == stack_fingerprint(stack_file) and plan.gpus_after == 8
    assert ["read", "demo"] in provider.store.data["calls"]


def test_destroy_plan_needs_no_compile_and_deletes_what_is_live(stack_file, provider, compiled):
    spec = load(stack_file)
    for resource in provider.desired(spec, None):
        provider._create(resource)
    plan = compute_plan(spec, provider, None, destroy=True)
    assert compiled == [] and plan.destroy
    assert {c.action for c in plan.changes} == {"delete"} and len(plan.changes) == 4
    order = [c.resource_id for c in plan.changes]
    assert order.index("mem_service/demo-svc") < order.index("mem_job/demo") < order.index("mem_volume/demo-data")


def test_given_desired_resources_skip_the_pure_part(stack_file, provider, compiled):
    plan = compute_plan(load(stack_file), provider, None, desired=[])
    assert compiled == [] and plan.changes == []


def test_optional_provider_hooks_add_warnings_and_restart_checks(stack_file, provider):
    provider.plan_warnings = lambda changes: [f"{len(changes)} changes on a shared partition"]
    spec = load(stack_file)
    plan = compute_plan(spec, provider, None)
    assert plan.warnings == ["4 changes on a shared partition"]
    for resource in provider.desired(spec, None):
        provider._create(resource)
    provider.restarts_on_update = lambda change: True
    changed = spec.model_copy(update={"slurm": spec.slurm.model_copy(update={"time": "01:00:00"})})
    plan = compute_plan(changed, provider, None)
    assert [(r.resource_id, r.action) for r in plan.restarts] == [("mem_job/demo", "update")]


def test_outputs_come_from_the_optional_provider_method(provider, stack_file):
    spec = load(stack_file)
    assert collect_outputs(provider, spec, []) == {}
    live = [provider._create(r) for r in provider.desired(spec, None)]
    assert collect_outputs(provider, spec, live) == {"endpoint": "http://demo-svc.memory:8000/v1"}

    class NoOutputs:
        pass

    assert collect_outputs(NoOutputs(), spec, live) is None


def test_rules_are_asked_once_per_kind(provider, monkeypatch):
    asked = []
    original = provider.update_rules
    monkeypatch.setattr(provider, "update_rules", lambda kind: asked.append(kind) or original(kind))
    rules = rules_for(provider)
    rules("mem_job"), rules("mem_job"), rules("mem_volume")
    assert asked == ["mem_job", "mem_volume"]


def test_work_dir_is_the_madinfra_folder_of_the_state_dir():
    assert work_dir_for(Path(".madinfra/state")) == Path(".madinfra")
    assert work_dir_for(Path("/srv/x/state")) == Path("/srv/x/.madinfra")


def test_open_stack_passes_provider_options(stack_file, tmp_path):
    seen = {}

    def factory(target, options):
        seen["target"], seen["options"] = target, options
        return MemoryProvider(options)

    ctx = open_stack(stack_file, tmp_path / ".madinfra" / "state", ProviderOptions(ssh_target="me@login", kube_context="c", insecure_skip_host_key_check=True), factory)
    ctx.close()
    options = seen["options"]
    assert seen["target"] == "slurm" and ctx.name == "demo" and ctx.provider.closed
    assert options.stack_dir == stack_file.resolve().parent and options.work_dir == tmp_path / ".madinfra"
    assert (options.ssh_target, options.kube_context, options.insecure_skip_host_key_check) == ("me@login", "c", True)


def test_missing_stack_file_is_a_clear_error(tmp_path):
    with pytest.raises(MadinfraError, match="nope.yaml"):
        stack_fingerprint(tmp_path / "nope.yaml")


def test_open_stack_binds_the_provider_to_the_stack(tmp_path):
    """destroy / apply PLAN / show never call desired(): the provider learns its stack from bind()."""
    from madinfra.engine.pipeline import open_stack

    stack_file = tmp_path / "bound.yaml"
    stack_file.write_text("name: bound\nslurm: {partition: debug}\n")
    bound = []

    class Bindable(MemoryProvider):
        def bind(self, spec):
            bound.append(spec.name)

    ctx = open_stack(stack_file, tmp_path / "state", provider_factory=lambda target, options: Bindable(options))
    assert bound == ["bound"] and ctx.spec.name == "bound"
