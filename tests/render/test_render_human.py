import io

from rich.console import Console

from madinfra.planner import plan as make_plan
from madinfra.planner.plan import Plan, Restart
from madinfra.render.human import NO_CHANGES, format_value, plan_text, print_plan
from madinfra.resources import Change, FieldChange, Resource, UpdateRules
from madinfra.secrets import Redactor


def r(kind, name, **spec):
    return Resource(kind, name, {"spec": spec})


def sample() -> Plan:
    changes = [
        Change("delete", "cfg/old", None, r("cfg", "old"), reasons=["no longer in the stack"]),
        Change("create", "vol/v", r("vol", "v"), None, fields=[FieldChange("spec.size", None, "1Gi")]),
        Change(
            "update",
            "svc/s",
            r("svc", "s"),
            r("svc", "s"),
            fields=[FieldChange("spec.port", 9000, 80), FieldChange("spec.tls", None, True), FieldChange("spec.debug", True, None)],
            reasons=["changed outside madinfra"],
            drift=True,
        ),
        Change(
            "replace",
            "job/j",
            r("job", "j"),
            r("job", "j"),
            fields=[FieldChange("spec.partition", "a", "b", True), FieldChange("spec.time", "1:00", "2:00")],
            reasons=["spec.partition forces replacement"],
        ),
    ]
    return Plan("demo", changes, [], [], gpus_before=8, gpus_after=16, restarts=[Restart("job/j", "replace"), Restart("job/k", "delete")], warnings=["partition b is small"])


def test_full_plan_text():
    assert plan_text(sample()).splitlines() == [
        "madinfra will perform the following actions on stack 'demo':",
        "",
        "  # cfg/old will be destroyed",
        "  # (no longer in the stack)",
        "  - cfg/old",
        "",
        "  # vol/v will be created",
        "  + vol/v",
        '      + spec.size = "1Gi"',
        "",
        "  # svc/s has changed outside madinfra and will be updated in-place",
        "  # (drift: values shown as live -> desired)",
        "  ~ svc/s",
        "      ~ spec.port: 9000 -> 80",
        "      + spec.tls: true",
        "      - spec.debug: true",
        "",
        "  # job/j will be replaced",
        "-/+ job/j",
        '      ~ spec.partition: "a" -> "b"  # forces replacement',
        '      ~ spec.time: "1:00" -> "2:00"',
        "",
        "Plan: 1 to add, 1 to change, 1 to replace, 1 to destroy.",
        "GPUs: 8 -> 16",
        "Workloads that will restart: job/j (replaced), job/k (stopped)",
        "Warning: partition b is small",
    ]


def test_no_changes_message():
    empty = make_plan([], [], None, lambda kind: UpdateRules(), stack="demo")
    assert plan_text(empty) == NO_CHANGES == "No changes. Your infrastructure matches the configuration."


def test_destroy_plan_header():
    p = sample()
    p.destroy = True
    assert plan_text(p).startswith("madinfra will destroy every resource of stack 'demo':")


def test_colours_on_a_terminal_and_plain_text_elsewhere():
    out = io.StringIO()
    print_plan(sample(), Console(file=out, force_terminal=True, color_system="standard", width=200))
    coloured = out.getvalue()
    assert "\x1b[" in coloured and "\x1b[32m+\x1b[0m" in coloured and "\x1b[35m-/+" in coloured
    out = io.StringIO()
    print_plan(sample(), Console(file=out, width=40))
    assert "\x1b[" not in out.getvalue() and '      ~ spec.partition: "a" -> "b"  # forces replacement' in out.getvalue()


def test_secret_values_are_masked_in_every_line():
    p = sample()
    p.changes[1].fields[0] = FieldChange("spec.password", None, "hunter2-secret")
    p.warnings.append("token hunter2-secret looks weak")
    text = plan_text(p, Redactor(["hunter2-secret"]))
    assert "hunter2-secret" not in text and text.count("(sensitive value)") == 2


def test_values_are_spelled_as_json():
    assert format_value("x") == '"x"' and format_value({"b": 1, "a": [True]}) == '{"a": [true], "b": 1}' and format_value(None) == "null"


def test_pools_are_listed_replica_by_replica_with_the_gpu_peak():
    from madinfra.rollout import PoolRollout

    plan = sample()
    plan.rollouts = [
        PoolRollout("decode", 3, 2, removed=(2,), untouched=(0, 1), gpus_per_replica=4),
        PoolRollout("prefill", 2, 2, rolled=(0, 1), surge=1, gpus_per_replica=4),
    ]
    plan.gpus_peak, plan.gpus_free = 16, 8
    text = plan_text(plan)
    block = text.split("Pools:\n", 1)[1].split("\n\nPlan:", 1)[0]
    assert block.splitlines() == [
        "  ~ decode: 3 -> 2 replicas (replica 2 removed; replicas 0-1 untouched)",
        "  -/+ prefill[0..1] rolling, surge 1",
    ]
    assert "(peak 16 during apply; 8 free now)" in text
