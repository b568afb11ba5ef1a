"""Turn a stack file (native YAML/JSON, or a madengine additional-context JSON as-is) into a StackSpec.

The steps are: parse -> drop ``_comment``-style keys -> fold madengine's aliases into one shape ->
layer madengine's presets -> validate with pydantic -> semantic checks (split, ports, counts).
Every problem is collected with its dotted field path so ``validate`` can report all of them at once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from madinfra.errors import ConfigError
from madinfra.config.presets import k8s_layers, layered, slurm_layers
from madinfra.config.option_words import SLURM_OPTION_FIELDS, option_word_problem
from madinfra.config.unsupported import unsupported_problems
from madinfra.config.schema import (
    LAUNCHER_ALIASES,
    LAUNCHERS,
    REFUSED_LAUNCHERS,
    STACK_NAME_RE,
    ENV_NAME_RE,
    StackSpec,
)

GPU_ALIASES = ("gpus_per_node", "gpu_count", "n_gpus", "num_gpus", "ngpus")
Problems = list[tuple[str, str]]


def load(path: str | Path, target: str | None = None) -> StackSpec:
    """Read and resolve a stack file, raising ConfigError listing every problem found.

    ``target`` (from ``--target``) selects the target of a file that has no ``k8s``/``slurm``
    section; it must agree with the file when the file names one.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [("", "file not found; check the path")]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [("", f"cannot read the file ({exc.__class__.__name__}); pass a readable UTF-8 stack file")]) from None
    except OSError as exc:  # a path through a file, a name too long, an I/O error...
        raise ConfigError(source, [("", f"cannot read the file ({exc.strerror or exc.__class__.__name__}); pass a readable UTF-8 stack file")]) from None
    raw = parse_text(text, source, path.suffix.lower())
    if target is not None:
        declared = raw.get("target")
        if declared is not None and declared != target:
            raise ConfigError(source, [("target", f"says '{declared}' but --target {target} was given; drop one of them")])
        raw = {**raw, "target": target}
    return resolve(raw, source=source, default_name=path.stem)


MAX_EXPANDED_VALUES = 100_000
"""A stack file holds hundreds of values; YAML aliases can make a few lines stand for billions
(the "billion laughs" file), which would exhaust memory when the tree is copied."""


def _expanded_size(node: yaml.Node, seen: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (each node counted once
    per reference, computed without expanding anything)."""
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, seen) + _expanded_size(v, seen) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, seen) for item in node.value)
    else:
        size = 1
    seen[id(node)] = size
    return size


def _load_yaml(text: str, source: str) -> Any:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_VALUES:
            raise ConfigError(
                source,
                [("", f"expands to more than {MAX_EXPANDED_VALUES:,} values through YAML aliases (*name); a stack file needs a few hundred: write the values out instead")],
            )
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def parse_text(text: str, source: str, suffix: str = ".yaml") -> dict[str, Any]:
    """Parse JSON or YAML text into a mapping; a syntax error names the line."""
    try:
        data = json.loads(text) if suffix == ".json" else _load_yaml(text, source)
    except json.JSONDecodeError as exc:
        raise ConfigError(source, [("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(source, [("", f"invalid YAML{where}: {problem}")]) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(source, [("", f"the file is {kind}, but a stack must be a mapping of fields such as 'distributed' and 'slurm' or 'k8s'")])
    return data


def resolve(raw: dict[str, Any], *, source: str = "<stack>", default_name: str = "stack") -> StackSpec:
    """Resolve a parsed mapping into a validated StackSpec (pure; no I/O)."""
    # Problems found early are kept while validation goes on, so one run reports all of them;
    # only a problem that leaves no usable shape (``structural``) stops it early.
    problems: Problems = []
    structural: Problems = []
    user = _strip_comments(raw)
    user = _fold_aliases(user, problems, structural)
    target = _infer_target(user, structural)
    if structural:
        raise ConfigError(source, structural + problems)
    user.setdefault("name", _stack_name_from(default_name))
    merged = _apply_presets(user, target, structural)
    merged["target"] = target
    if structural:
        raise ConfigError(source, structural + problems)
    try:
        spec = StackSpec.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(source, problems + _pydantic_problems(exc)) from None
    problems.extend(semantic_problems(spec))
    if problems:
        raise ConfigError(source, problems)
    return spec


def _strip_comments(value: Any) -> Any:
    """madengine configs annotate with ``_comment``/``_notes`` keys at every level; drop them."""
    if isinstance(value, dict):
        return {k: _strip_comments(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(value, list):
        return [_strip_comments(v) for v in value]
    return value


def _stack_name_from(stem: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:40].strip("-")
    return name or "stack"


def _fold_aliases(user: dict[str, Any], problems: Problems, structural: Problems) -> dict[str, Any]:
    """Bring madengine's several spellings of one thing into the single shape StackSpec expects."""
    user = dict(user)
    if "kubernetes" in user:
        if "k8s" in user:
            structural.append(("kubernetes", "both 'k8s' and 'kubernetes' are present; keep one of them"))
        else:
            user["k8s"] = user.pop("kubernetes")
    for section in ("distributed", "k8s", "slurm", "model", "service", "env_vars", "docker_env_vars", "context", "launcher", "roles", "secret_env"):
        if section in user and user[section] is None and section not in ("k8s", "slurm"):
            del user[section]  # `distributed:` with nothing under it in YAML means "defaults"
        elif section in user and user[section] is None:
            user[section] = {}
        elif section in user and not isinstance(user[section], dict):
            structural.append((section, f"must be a mapping, got {type(user[section]).__name__}"))
    if structural:
        return user

    distributed = dict(user.get("distributed") or {})
    legacy = user.pop("launcher", None)
    if legacy:
        for src, dst in (("type", "launcher"), ("nnodes", "nnodes"), ("nproc_per_node", "nproc_per_node"), ("master_port", "master_port")):
            if src in legacy:
                distributed.setdefault(dst, legacy[src])
    if "port" in distributed:
        port = distributed.pop("port")
        if "master_port" in distributed and distributed["master_port"] != port:
            problems.append(("distributed.port", f"conflicts with distributed.master_port ({distributed['master_port']} vs {port}); keep only master_port"))
        distributed.setdefault("master_port", port)
    launcher = distributed.get("launcher")
    if launcher is not None:
        if not isinstance(launcher, str):
            problems.append(("distributed.launcher", f"must be a launcher name, got {launcher!r}"))
            distributed["launcher"] = None
        else:
            canonical = LAUNCHER_ALIASES.get(launcher.strip().lower(), launcher.strip().lower())
            if canonical in REFUSED_LAUNCHERS:
                problems.append(("distributed.launcher", REFUSED_LAUNCHERS[canonical]))
                canonical = None  # keep validating the rest of the file
            elif canonical not in LAUNCHERS:
                problems.append(("distributed.launcher", f"Unknown launcher type '{launcher}'. Valid launchers: {', '.join(LAUNCHERS)}"))
                canonical = None  # keep validating the rest of the file
            distributed["launcher"] = canonical
    if distributed:
        user["distributed"] = distributed

    context = user.pop("context", None)
    if context:
        ctx_env = context.get("env_vars") if isinstance(context, dict) else None
        if ctx_env is not None and not isinstance(ctx_env, dict):
            problems.append(("context.env_vars", f"must be a mapping of NAME: value, got {type(ctx_env).__name__}"))
            ctx_env = None
        if ctx_env:
            # madengine ignores context.env_vars (pain point 7); madinfra honours it under env_vars.
            user["env_vars"] = {**ctx_env, **(user.get("env_vars") or {})}
    for key in ("env_vars", "docker_env_vars"):
        if isinstance(user.get(key), dict):
            user[key] = {k: _env_scalar(v) for k, v in user[key].items()}
    for section in ("roles",):
        for role in (user.get(section) or {}).values() if isinstance(user.get(section), dict) else ():
            if isinstance(role, dict) and isinstance(role.get("env"), dict):
                role["env"] = {k: _env_scalar(v) for k, v in role["env"].items()}
    return user


def _env_scalar(value: Any) -> Any:
    """YAML turns ``OMP_NUM_THREADS: 8`` into an int; environment values are strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _infer_target(user: dict[str, Any], problems: Problems) -> str:
    has_k8s, has_slurm = "k8s" in user, "slurm" in user
    declared = user.get("target")
    if declared == "kubernetes":
        declared = "k8s"
    if has_k8s and has_slurm:
        problems.append(("", "Conflicting deployment configuration: Both 'k8s' and 'slurm' fields present; keep only the section of the cluster you deploy to"))
        return "k8s"
    if declared is not None and declared not in ("k8s", "slurm"):
        problems.append(("target", f"must be 'k8s' or 'slurm', got {declared!r}"))
        return "k8s"
    inferred = "k8s" if has_k8s else "slurm" if has_slurm else None
    if declared and inferred and declared != inferred:
        problems.append(("target", f"is '{declared}' but the file has a '{inferred}' section; make them agree (or use --target {inferred})"))
    target = declared or inferred
    if target is None:
        problems.append(("", "no deployment target: add a 'k8s' or 'slurm' section (or 'target: k8s|slurm')"))
        return "k8s"
    return target


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _top_level_gpus(user: dict[str, Any]) -> int | None:
    for alias in GPU_ALIASES:
        if alias in user:
            return _int_or_none(user.pop(alias))
    return None


def _apply_presets(user: dict[str, Any], target: str, structural: Problems) -> dict[str, Any]:
    """Layer madengine presets under the user's values, filling the counts madengine leaves loose.

    Differences from madengine, on purpose: ``distributed.nproc_per_node`` fills the GPU count when
    the user gave no GPU count (madengine would request the preset's 8 GPUs), and
    ``distributed.nnodes`` fills ``slurm.nodes`` likewise, so the two can never silently disagree.
    """
    user = dict(user)
    distributed = dict(user.get("distributed") or {})
    top_gpus = _top_level_gpus(user)
    nnodes = _int_or_none(distributed.get("nnodes"))
    nproc = _int_or_none(distributed.get("nproc_per_node"))
    if target == "k8s":
        section = dict(user.get("k8s") or {})
        if top_gpus is not None:
            section["gpu_count"] = top_gpus
        elif "gpu_count" not in section and nproc is not None:
            section["gpu_count"] = nproc
        user["k8s"] = section
        vendor = str(user.get("gpu_vendor") or "AMD").upper()
        if vendor not in ("AMD", "NVIDIA"):
            structural.append(("gpu_vendor", f"must be AMD or NVIDIA, got {user.get('gpu_vendor')!r}"))
            return user
        layers = k8s_layers(vendor, nnodes or 1, _int_or_none(section.get("gpu_count")), bool(distributed.get("launcher")))
        merged = layered(layers, user)
        gpus = merged["k8s"].get("gpu_count", 1)
    else:
        section = dict(user.get("slurm") or {})
        if top_gpus is not None:
            section["gpus_per_node"] = top_gpus
        elif "gpus_per_node" not in section and nproc is not None:
            section["gpus_per_node"] = nproc
        if "nodes" not in section and nnodes is not None:
            section["nodes"] = nnodes
        user["slurm"] = section
        merged = layered(slurm_layers(_int_or_none(section.get("nodes")) or 1), user)
        gpus = merged["slurm"].get("gpus_per_node", 8)
        merged["distributed"].setdefault("nnodes", merged["slurm"].get("nodes", 1))
    merged.setdefault("distributed", {})
    preset_port = merged["distributed"].pop("port", None)  # madengine's SLURM spelling
    if preset_port is not None:
        merged["distributed"].setdefault("master_port", preset_port)
    if "nproc_per_node" not in merged["distributed"]:
        merged["distributed"]["nproc_per_node"] = gpus if isinstance(gpus, int) and gpus >= 1 else 1
    # madengine's run-mode keys: refused with what madinfra does instead, never silently dropped.
    for key, why in MADENGINE_RUN_OPTIONS.items():
        if key in merged:
            merged.pop(key)
            structural.append((key, f"is a madengine run option madinfra does not have: {why}; remove it"))
    return merged


MADENGINE_RUN_OPTIONS = {
    "deploy": "madinfra deploys only with `madinfra apply`",
    "live_output": "apply prints each step's progress, and job logs stay on the cluster (the error of a failed job names its log)",
    "monitor": "apply waits until every workload is ready, and `madinfra show` reports their state",
    "cleanup_on_failure": "nothing is deleted when an apply fails; state records what was applied, and `madinfra destroy` removes it",
    "rocenv_mode": "madinfra collects no ROCm environment report",
}
"""Top-level keys of madengine's additional context that choose how madengine runs, not what."""


def _pydantic_problems(exc: ValidationError) -> Problems:
    problems: Problems = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            message = "unknown field; check the spelling against the documented fields (docs: README, 'Stack file')"
        elif kind == "missing":
            message = "is required"
        else:
            message = err["msg"]
            if "input" in err and not isinstance(err["input"], (dict, list)):
                message += f" (got {err['input']!r})"
        problems.append((path, message))
    return problems


def semantic_problems(spec: StackSpec) -> Problems:
    """Checks that need the whole resolved stack; messages follow madengine's where it has one."""
    problems: Problems = []
    dist = spec.distributed
    if not STACK_NAME_RE.match(spec.name):
        problems.append(("name", f"'{spec.name}' is not a valid stack name; use 1-40 lower-case letters, digits and '-', starting and ending with a letter or digit"))
    if dist.nnodes < 1:
        problems.append(("distributed.nnodes", f"Invalid nnodes: {dist.nnodes}. Must be positive integer >= 1"))
    if dist.nproc_per_node < 1:
        problems.append(("distributed.nproc_per_node", f"Invalid nproc_per_node: {dist.nproc_per_node}. Must be positive integer >= 1"))
    if not 1 <= dist.master_port <= 65535:
        problems.append(("distributed.master_port", f"Invalid master_port: {dist.master_port}. Must be between 1 and 65535"))
    gpus = spec.gpus_per_node
    gpu_field = "k8s.gpu_count" if spec.target == "k8s" else "slurm.gpus_per_node"
    if gpus < 0:
        problems.append((gpu_field, f"must be >= 0 (0 runs CPU-only), got {gpus}"))
    elif gpus and dist.nproc_per_node > gpus:
        problems.append(("distributed.nproc_per_node", f"{dist.nproc_per_node} processes per node but {gpu_field} is {gpus}; make them equal"))
    if spec.slurm is not None:
        if spec.slurm.nodes < 1:
            problems.append(("slurm.nodes", f"Invalid nodes: {spec.slurm.nodes}. Must be positive integer >= 1"))
        elif spec.slurm.nodes != dist.nnodes:
            problems.append(("distributed.nnodes", f"is {dist.nnodes} but slurm.nodes is {spec.slurm.nodes}; set them equal (or drop slurm.nodes)"))
    if dist.launcher == "sglang-disagg":
        problems.extend(_disagg_problems(spec))
    elif dist.sglang_disagg is not None:
        problems.append(("distributed.sglang_disagg", f"only applies to launcher 'sglang-disagg', not {dist.launcher!r}; remove it or change the launcher"))
    if spec.service is not None and spec.service.port is not None and not 1 <= spec.service.port <= 65535:
        problems.append(("service.port", f"Invalid port: {spec.service.port}. Must be between 1 and 65535"))
    if spec.service is not None and not spec.is_service:
        problems.append(("service", f"only applies to inference launchers (vllm, sglang, sglang-disagg), not {dist.launcher!r}"))
    for section, env in (("env_vars", spec.env_vars), ("docker_env_vars", spec.docker_env_vars), ("secret_env", spec.secret_env)):
        for key in env:
            if not ENV_NAME_RE.match(key):
                problems.append((f"{section}.{key}", "is not a valid environment variable name; use letters, digits and '_' and do not start with a digit"))
    for key, secret in spec.secret_env.items():
        if (secret.from_env is None) == (secret.value is None):
            problems.append((f"secret_env.{key}", "set exactly one of 'from_env' (preferred) or 'value'"))
    problems.extend(_nul_problems(spec.model_dump(mode="python")))
    valid_roles = set(roles_for(spec))
    for role in spec.roles:
        if role not in valid_roles:
            problems.append((f"roles.{role}", f"is not a role of launcher {dist.launcher or 'none'}; valid roles: {', '.join(sorted(valid_roles))}"))
    problems.extend(_rollout_problems(spec, valid_roles))
    problems.extend(unsupported_problems(spec))
    if spec.slurm is not None:
        for key in SLURM_OPTION_FIELDS:
            problem = option_word_problem(f"slurm.{key}", getattr(spec.slurm, key))
            if problem:
                problems.append(problem)
    return problems


def _nul_problems(value: Any, path: str = "") -> Problems:
    """NUL cannot travel in an argv or an environment; bash would silently drop it."""
    if isinstance(value, str):
        return [(path, "contains a NUL character, which no command line or environment can carry; remove it")] if "\x00" in value else []
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _nul_problems(item, f"{path}.{key}" if path else str(key))]
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in _nul_problems(item, f"{path}.{i}")]
    return []


def pool_roles(spec: StackSpec) -> tuple[str, ...]:
    """Roles whose replicas serve independently, so a change can roll replica by replica: the
    disaggregated prefill and decode pools, and vLLM's data-parallel replicas on Kubernetes
    (on SLURM a multi-node vLLM or SGLang server is one model spanning every node)."""
    if spec.distributed.launcher == "sglang-disagg":
        return ("prefill", "decode")
    if spec.target == "k8s" and spec.distributed.launcher == "vllm" and spec.distributed.nnodes > 1:
        return ("server",)
    return ()


def _rollout_problems(spec: StackSpec, valid_roles: set[str]) -> Problems:
    """Rollout settings only where there is a pool to roll, and never a roll that cannot move."""
    pools = pool_roles(spec)
    problems: Problems = []
    settings = []
    if spec.service is not None and "rollout" in spec.service.model_fields_set:
        settings.append(("service.rollout", spec.service.rollout))
        if not pools:
            problems.append(("service.rollout", "applies to pools of independent replicas (sglang-disagg prefill/decode, multi-node vLLM on k8s); this stack has none, so remove it"))
    for role, override in spec.roles.items():
        if override.rollout is None or role not in valid_roles:
            continue
        settings.append((f"roles.{role}.rollout", override.rollout))
        if role not in pools:
            where = ", ".join(pools) if pools else "none in this stack"
            problems.append((f"roles.{role}.rollout", f"'{role}' is not a pool of independent replicas (pools: {where}); remove it"))
    for role, override in spec.roles.items():
        if spec.distributed.launcher == "sglang-disagg" and any(p.split(".")[-1] in ("replicas", "nodes") for p in override.ignore_changes):
            problems.append((
                f"roles.{role}.ignore_changes",
                "a disaggregated pool's size cannot be left to someone else: the proxy's endpoint list and the stack's topology follow the stack's split; "
                "change distributed.sglang_disagg instead",
            ))
    for path, rollout in settings:
        if rollout.max_surge == 0 and rollout.max_unavailable == 0:
            problems.append((path, "max_surge and max_unavailable are both 0, so no replica could ever be changed; set one of them to at least 1"))
    return problems


def roles_for(spec: StackSpec) -> tuple[str, ...]:
    """The node roles a stack has; disaggregated SGLang is the only launcher with several."""
    if spec.distributed.launcher == "sglang-disagg":
        return ("proxy", "prefill", "decode")
    return ("server",) if spec.is_service else ("worker",)


def disagg_split(nnodes: int, prefill: int | None, decode: int | None) -> tuple[int, int]:
    """Prefill/decode node counts: the custom split if given, else the guide's floor-40% formula.

    The guide's table says 5 nodes -> 2/2, which contradicts its own formula
    ``max(1, (nnodes - 1) * 2 // 5)`` (= 1 for 5 nodes); the formula wins, as in madengine's code.
    A single given key implies the other (the remaining non-proxy nodes).
    """
    if prefill is None and decode is None:
        prefill = max(1, (nnodes - 1) * 2 // 5)
        return prefill, nnodes - 1 - prefill
    if prefill is None:
        assert decode is not None
        return nnodes - 1 - decode, decode
    if decode is None:
        return prefill, nnodes - 1 - prefill
    return prefill, decode


def _disagg_problems(spec: StackSpec) -> Problems:
    dist = spec.distributed
    nnodes = dist.nnodes
    if nnodes < 3:
        return [("distributed.nnodes", f"SGLang Disaggregated requires minimum 3 nodes (1 proxy + 1 prefill + 1 decode), got {nnodes}")]
    split = dist.sglang_disagg
    if split is None:
        return []
    problems: Problems = []
    prefill, decode = disagg_split(nnodes, split.prefill_nodes, split.decode_nodes)
    if prefill < 1:
        problems.append(("distributed.sglang_disagg.prefill_nodes", f"prefill_nodes must be >= 1, got {prefill}"))
    if decode < 1:
        problems.append(("distributed.sglang_disagg.decode_nodes", f"decode_nodes must be >= 1, got {decode}"))
    if not problems and prefill + decode + 1 != nnodes:
        problems.append((
            "distributed.sglang_disagg",
            f"Custom split validation failed: prefill_nodes ({prefill}) + decode_nodes ({decode}) + 1 proxy must equal nnodes ({nnodes}), but got {prefill + decode + 1}",
        ))
    return problems
