"""Property: whatever a stack file contains, loading it either succeeds or raises ConfigError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madinfra.config import resolve
from madinfra.config.schema import StackSpec
from madinfra.errors import ConfigError

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**40), max_value=2**40), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["torchrun", "sglang-disagg", "vllm", "AMD", "NVIDIA", "k8s", "slurm", "$(id)", "'\"\n;"]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)

KEYS = ["name", "target", "gpu_vendor", "distributed", "k8s", "kubernetes", "slurm", "env_vars", "context", "model", "service", "roles", "secret_env", "launcher", "gpu_count", "n_gpus"]
DIST_KEYS = ["launcher", "nnodes", "nproc_per_node", "master_port", "port", "sglang_disagg", "backend"]
SECTION_KEYS = ["gpu_count", "nodes", "gpus_per_node", "partition", "time", "namespace", "tolerations", "node_selector", "modules"]

structured = st.fixed_dictionaries(
    {},
    optional={
        "distributed": st.dictionaries(st.sampled_from(DIST_KEYS), json_values, max_size=5),
        "slurm": st.dictionaries(st.sampled_from(SECTION_KEYS), json_values, max_size=4),
        "k8s": st.dictionaries(st.sampled_from(SECTION_KEYS), json_values, max_size=4),
        "env_vars": st.dictionaries(st.text(max_size=6), json_values, max_size=3),
        **{key: json_values for key in KEYS if key not in ("distributed", "slurm", "k8s", "env_vars")},
    },
)


def check(data) -> None:
    try:
        spec = resolve(data)
    except ConfigError as err:
        assert str(err) and all(isinstance(path, str) and message for path, message in err.problems)
    else:
        assert isinstance(spec, StackSpec)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structured)
def test_structured_random_configs_never_raise_anything_else(data):
    check(data)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), json_values, max_size=6))
def test_arbitrary_mappings_never_raise_anything_else(data):
    check(data)


@settings(max_examples=200, deadline=None)
@given(
    launcher=st.sampled_from(["torchrun", "deepspeed", "megatron", "torchtitan", "vllm", "sglang", "sglang-disagg", "megatron-lm", "sglang_disagg"]),
    nnodes=st.integers(min_value=-2, max_value=40),
    nproc=st.integers(min_value=-1, max_value=16),
    prefill=st.one_of(st.none(), st.integers(min_value=-1, max_value=40)),
    decode=st.one_of(st.none(), st.integers(min_value=-1, max_value=40)),
    target=st.sampled_from(["k8s", "slurm"]),
)
def test_count_combinations_validate_or_explain(launcher, nnodes, nproc, prefill, decode, target):
    split = {k: v for k, v in (("prefill_nodes", prefill), ("decode_nodes", decode)) if v is not None}
    dist = {"launcher": launcher, "nnodes": nnodes, "nproc_per_node": nproc}
    if split and launcher.startswith("sglang"):
        dist["sglang_disagg"] = split
    check({target: {}, "distributed": dist})
