"""Disaggregated SGLang: a mini_lb proxy in front of separate prefill and decode pools.

Ranks follow madengine: 0 is the proxy, 1..xP prefill, the rest decode, with the split from
``config.disagg_split`` (floor-40 % default or the custom one). Each pool is its own role, so
a provider can run it as its own workload (K8s) or allocation (SLURM) and resize one pool
without touching the other.

The proxy gets no GPUs: mini_lb only routes HTTP, and madengine's one-GPU-count-for-all Job
wastes a whole GPU node on it; that saving is deliberate.

K8s knows every pool's pod DNS names at compile time, so the proxy's ``--prefill``/``--decode``
URL lists are literals. SLURM learns hosts only inside each pool's allocation, so the proxy reads
them at run time from ``<workdir>/endpoints/{prefill,decode}`` (one URL per line, written by the
SLURM provider); the unquoted ``$(cat ...)`` splits them into arguments on purpose.

SLURM env follows madengine's SGLANG_DISAGG_* contract so a role-picking model script keeps
working; SGLANG_NODE_IPS lists the hosts of this pool's own allocation.

The values that describe the whole stack's shape (pool sizes, node totals, tensor parallel size
and each pool's first global rank) are the LaunchPlan's ``topology_env``, not any role's env: providers deliver them
out of band (ConfigMap via envFrom, a sourced file on SLURM), and ranks are computed on the node
from ``MADINFRA_FIRST_RANK_<POOL>``. So resizing the prefill pool leaves the decode pool's spec
byte-for-byte unchanged, and its pods/jobs keep running (DESIGN: resize one pool in place).
"""

from __future__ import annotations

from madinfra.config import disagg_split
from madinfra.launchers.common import (
    MODEL_PATH_GUARD,
    SGLANG_PORT,
    WORKDIR,
    LaunchContext,
    RoleDraft,
    export_pod_ip,
    finish,
    quote_words,
    script_line,
    start_role,
)
from madinfra.launchers.addressing import SlurmAddressing
from madinfra.launchers.model import RoleLaunch

ENDPOINTS_DIR = f"{WORKDIR}/endpoints"
TRANSFER_BACKEND = "mooncake"


def split(ctx: LaunchContext) -> tuple[int, int]:
    custom = ctx.spec.distributed.sglang_disagg
    return disagg_split(
        ctx.nnodes,
        custom.prefill_nodes if custom else None,
        custom.decode_nodes if custom else None,
    )


def service_port(ctx: LaunchContext) -> int:
    """The proxy's port: service.port, else master_port as madengine serves mini_lb there."""
    return ctx.service_port(ctx.port)


def endpoint_file(pool: str) -> str:
    return f"{ENDPOINTS_DIR}/{pool}"


def pool_urls(ctx: LaunchContext, pool: str, count: int) -> list[str]:
    return [f"http://{ctx.addressing.host(pool, i)}:{SGLANG_PORT}" for i in range(count)]


def proxy_lines(ctx: LaunchContext, prefill: int, decode: int) -> list[str]:
    tail = f"--host 0.0.0.0 --port {service_port(ctx)}"
    lb = "python3 -m sglang.srt.disaggregation.mini_lb"
    if ctx.on_k8s:
        prefill_urls = quote_words(pool_urls(ctx, "prefill", prefill))
        decode_urls = quote_words(pool_urls(ctx, "decode", decode))
        return [f"{lb} --prefill {prefill_urls} --decode {decode_urls} {tail}"]
    assert ctx.spec.slurm is not None
    files = [f'"{endpoint_file(pool)}"' for pool in ("prefill", "decode")]
    polls = max(1, ctx.spec.slurm.ready_timeout // 2)
    return [
        f"for _ in $(seq {polls}); do [ -s {files[0]} ] && [ -s {files[1]} ] && break; sleep 2; done",
        *supervise(f"{lb} --prefill $(cat {files[0]}) --decode $(cat {files[1]}) {tail}", files),
    ]


def supervise(proxy: str, files: list[str]) -> list[str]:
    """Run the proxy and restart it (inside the same SLURM job) whenever apply rewrites an
    endpoint file, so resizing one pool neither resubmits the proxy job nor touches the other
    pool. If the proxy exits by itself, the job ends with its exit status."""
    return [
        f"endpoints_sum() {{ cat {' '.join(files)} 2>/dev/null | cksum; }}",
        "while true; do",
        "  seen=$(endpoints_sum)",
        f"  {proxy} &",
        "  proxy_pid=$!",
        '  while kill -0 "$proxy_pid" 2>/dev/null && [ "$(endpoints_sum)" = "$seen" ]; do sleep 2; done',
        '  if ! kill -0 "$proxy_pid" 2>/dev/null; then wait "$proxy_pid"; exit $?; fi',
        '  echo "madinfra: endpoint lists changed; restarting the proxy" >&2',
        '  kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null',
        "done",
    ]


def server_line(ctx: LaunchContext, mode: str) -> str:
    host = "${POD_IP}" if ctx.on_k8s else "${SGLANG_HOST_IP}"
    line = (
        f'python3 -m sglang.launch_server --model-path "$MODEL_PATH" --disaggregation-mode {mode}'
        f' --tp-size {ctx.nproc} --host "{host}" --port {SGLANG_PORT} --trust-remote-code'
        f" --disaggregation-transfer-backend {TRANSFER_BACKEND}"
    )
    extra = quote_words(ctx.args)
    return f"{line} {extra}" if extra else line


def first_rank_var(pool: str) -> str:
    return f"MADINFRA_FIRST_RANK_{pool.upper()}"


def topology(ctx: LaunchContext) -> dict[str, str]:
    """The stack's shape, delivered to every role out of band (see the module docstring)."""
    prefill, decode = split(ctx)
    shape: dict[str, int] = {
        "NNODES": ctx.nnodes,
        "WORLD_SIZE": ctx.nnodes,
        "NPROC_PER_NODE": ctx.nproc,
        "MAD_RUNTIME_NGPUS": ctx.nproc,
        first_rank_var("prefill"): 1,
        first_rank_var("decode"): 1 + prefill,
    }
    if ctx.on_k8s:
        shape.update(TOTAL_PODS=ctx.nnodes, PREFILL_COUNT=prefill, DECODE_COUNT=decode, TP_SIZE=ctx.nproc)
    else:
        shape.update(
            MAD_TOTAL_NODES=ctx.nnodes,
            SGLANG_DISAGG_PREFILL_NODES=prefill,
            SGLANG_DISAGG_DECODE_NODES=decode,
            SGLANG_DISAGG_TOTAL_NODES=ctx.nnodes,
            SGLANG_TP_SIZE=ctx.nproc,
        )
    return {name: str(value) for name, value in shape.items()}


def _pool_rank(ctx: LaunchContext, role: str) -> str:
    """Global rank: 0 for the proxy, else the pool's first rank (from the topology) + index."""
    if role == "proxy":
        return "0"
    index = "${HOSTNAME##*-}" if ctx.on_k8s else "${SLURM_PROCID}"
    return f"$(( ${{{first_rank_var(role)}}} + {index} ))"


def _topology(ctx: LaunchContext, draft: RoleDraft) -> None:
    for name in topology(ctx):
        draft.env.pop(name, None)
    rank = _pool_rank(ctx, draft.role)
    rank_vars = ["NODE_RANK", "RANK"] + (["POD_INDEX"] if ctx.on_k8s else ["MAD_NODE_RANK", "SGLANG_NODE_RANK"])
    for name in rank_vars:
        draft.put(name, rank)
    if ctx.on_k8s:
        export_pod_ip(ctx, draft)
        return
    draft.set("SGLANG_DISAGG_MODE", "enabled")
    assert isinstance(ctx.addressing, SlurmAddressing)
    draft.export("SGLANG_NODE_IPS", ctx.addressing.hosts_expr())
    draft.export("SGLANG_HOST_IP", ctx.self_ip())


def roles(ctx: LaunchContext) -> list[RoleLaunch]:
    prefill, decode = split(ctx)
    pools = (
        ("proxy", 1, 0, 0),
        ("prefill", prefill, 1, ctx.gpus),
        ("decode", decode, 1 + prefill, ctx.gpus),
    )
    result = []
    for role, nodes, first_rank, gpus in pools:
        draft = start_role(ctx, role, nodes, first_rank, gpus, ray_style=True)
        _topology(ctx, draft)
        if ctx.spec.model.script:
            draft.run(script_line(ctx.spec.model.script, ctx.args, runner=False))
        elif role == "proxy":
            draft.run(*proxy_lines(ctx, prefill, decode))
        else:
            draft.run(MODEL_PATH_GUARD, server_line(ctx, role))
        draft.ports["http"] = service_port(ctx) if role == "proxy" else SGLANG_PORT
        result.append(finish(ctx, draft))
    return result
