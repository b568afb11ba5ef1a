"""The disaggregated pools' KV cache layout: read from what each pool runs, checked at validate."""

from __future__ import annotations

from typing import Any

import pytest

from madinfra.config import resolve
from madinfra.errors import ConfigError
from madinfra.launchers import compile, kv_layout


def disagg(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "demo",
        "k8s": {"gpu_count": 8},
        "distributed": {"launcher": "sglang-disagg", "nnodes": 3, "nproc_per_node": 8},
        "model": {"model_path": "/models/m"},
    }
    data.update(extra)
    return data


def layout(data: dict[str, Any], role: str) -> dict[str, str] | None:
    return kv_layout.decode(kv_layout.for_role(compile(resolve(data)), role))


def test_the_launchers_own_command_gives_the_model_tp_and_sglang_defaults() -> None:
    assert layout(disagg(), "prefill") == {
        "model": "/models/m", "tp": "8", "page_size": "1", "kv_cache_dtype": "auto", "transfer_backend": "mooncake",
    }
    assert layout(disagg(), "prefill") == layout(disagg(), "decode")


def test_model_args_count_and_the_last_flag_wins_as_in_argparse() -> None:
    data = disagg(model={"model_path": "/models/m", "args": ["--page-size", "16", "--kv-cache-dtype=fp8_e5m2", "--disaggregation-transfer-backend", "nixl"]})
    found = layout(data, "decode")
    assert found is not None
    assert (found["page_size"], found["kv_cache_dtype"], found["transfer_backend"]) == ("16", "fp8_e5m2", "nixl")


def test_only_pool_roles_of_a_disaggregated_stack_have_a_layout() -> None:
    launch = compile(resolve(disagg()))
    assert kv_layout.for_role(launch, "proxy") is None
    sglang = compile(resolve({**disagg(), "distributed": {"launcher": "sglang", "nnodes": 1, "nproc_per_node": 8}}))
    assert kv_layout.for_role(sglang, "server") is None


def test_a_command_of_the_users_own_without_the_flags_has_no_known_layout() -> None:
    data = disagg(roles={"prefill": {"command": "python3 standin.py --role prefill"}, "decode": {"command": "python3 standin.py --role decode"}})
    assert layout(data, "prefill") is None


def test_encode_round_trips_values_with_separators() -> None:
    value = {"model": "/models/a,b=c;d e", "tp": "4", "page_size": "16", "kv_cache_dtype": "auto", "transfer_backend": "mooncake"}
    text = kv_layout.encode(value)
    assert ";" not in text and " " not in text
    assert kv_layout.decode(text) == value
    assert kv_layout.decode("something else") is None
    assert kv_layout.decode(None) is None


def test_pools_that_disagree_are_refused_at_validate_naming_the_field() -> None:
    data = disagg(roles={"decode": {"env": {"MODEL_PATH": "/models/other"}}})
    with pytest.raises(ConfigError) as info:
        compile(resolve(data))
    problems = dict(info.value.problems)
    assert list(problems) == ["roles.decode (model)"]
    assert "prefill runs with model /models/m and decode with /models/other" in problems["roles.decode (model)"]


def test_differences_name_each_changed_field() -> None:
    before = kv_layout.decode(kv_layout.encode({**kv_layout.DEFAULTS, "model": "/m", "page_size": "16"}))
    after = kv_layout.decode(kv_layout.encode({**kv_layout.DEFAULTS, "model": "/m", "page_size": "32", "tp": "4"}))
    assert before is not None and after is not None
    assert kv_layout.differences(before, after) == ["TP size 1 -> 4", "--page-size 16 -> 32"]
