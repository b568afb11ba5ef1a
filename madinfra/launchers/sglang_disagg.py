"""Disaggregated SGLang: a mini_lb proxy in front of separate prefill and decode pools.

Ranks follow madengine: 0 is the proxy, 1..xP prefill, the rest decode, with the split from
``config.disagg_split`` (floor-40 % default or the custom one). Each pool is its own role, so
a provider can run it as its own workload (K8s) or allocation (SLURM) and resize one pool
without touching the other.

The proxy gets no GPUs: mini_lb only routes HTTP, and madengine's one-GPU-count-for-all Job
wastes a whole GPU node on it; that saving is deliberate.

K8s knows every pool's pod DNS names at compile time, so the proxy's ``--prefill``/``--decode``
URL lists are literals. SLURM learns hosts only inside each replica's allocation, so the proxy reads
them at run time from ``<workdir>/endpoints/{prefill,decode}`` (one URL per healthy replica, in
replica order, written by the SLURM provider; a ``.source`` sidecar beside each names the replica
and job id behind every line); the unquoted ``$(cat ...)`` splits them into arguments on purpose.
The proxy restarts mini_lb inside its own job when a file changes and acknowledges the lists it
runs with in ``endpoints/.proxy-seen`` (``supervise``), which apply waits for before it cancels a
replica it drained.

SLURM env follows madengine's SGLANG_DISAGG_* contract so a role-picking model script keeps
working. SGLANG_NODE_IPS has one comma-separated entry per node of the whole stack in global
rank order (proxy, prefill, decode), so ``IPS[SGLANG_NODE_RANK]`` is always the node itself.
On SLURM each pool replica (one node: the TP size is ``nproc_per_node``) is its own job, started
in apply's order prefill -> decode -> proxy, and the provider exports the replica's index in its
script as ``MADINFRA_REPLICA_INDEX``. A task can only know what exists when it starts
(``node_ips_expr``): every serving pool from its endpoint file, with the task's own address at
its own position, the proxy (and a replica not yet running) as empty entries. The proxy, started
last, gets the complete list.

The values that describe the whole stack's shape (pool sizes, node totals, tensor parallel size
and each pool's first global rank) are the LaunchPlan's ``topology_env``, not any role's env: providers deliver them
out of band (ConfigMap via envFrom, a sourced file on SLURM), and ranks are computed on the node
from ``MADINFRA_FIRST_RANK_<POOL>`` plus the pod's ordinal (K8s) or ``MADINFRA_REPLICA_INDEX``
(SLURM). So resizing the prefill pool leaves the decode pool's spec
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
from madinfra.launchers.model import RoleLaunch

ENDPOINTS_DIR = f"{WORKDIR}/endpoints"
TRANSFER_BACKEND = "mooncake"
REPLICA_INDEX_VAR = "MADINFRA_REPLICA_INDEX"
"""Exported by the SLURM provider in each pool replica's job script: the replica's index in its pool."""
SERVING_POOLS = ("prefill", "decode")
SOURCE_SUFFIX = ".source"
ACK_FILE = ".proxy-seen"
"""In the endpoints directory: the checksum of the endpoint files the proxy's mini_lb runs with."""


def watched_files() -> tuple[str, ...]:
    """The endpoint files (relative to the endpoints directory, in checksum order) whose change
    restarts mini_lb; apply computes the same checksum to know when the proxy has the new lists."""
    return tuple(name for pool in SERVING_POOLS for name in (pool, pool + SOURCE_SUFFIX))


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
    files = [f'"{endpoint_file(pool)}"' for pool in SERVING_POOLS]
    watched = [f'"{ENDPOINTS_DIR}/{name}"' for name in watched_files()]
    polls = max(1, ctx.spec.slurm.ready_timeout // 2)
    return [
        f"for _ in $(seq {polls}); do [ -s {files[0]} ] && [ -s {files[1]} ] && break; sleep 2; done",
        *supervise(f"{lb} --prefill $(cat {files[0]}) --decode $(cat {files[1]}) {tail}", watched, f'"{ENDPOINTS_DIR}/{ACK_FILE}"', files),
    ]


def supervise(proxy: str, files: list[str], ack: str, required: list[str] | None = None) -> list[str]:
    """Run the proxy and restart it (inside the same SLURM job) whenever apply rewrites an
    endpoint file, so resizing one pool neither resubmits the proxy job nor touches the other
    pool. Each start writes the checksum of the files it started with to ``ack`` (atomically):
    apply waits for it before it cancels a replica it took out of a list, so the proxy never
    routes to a cancelled replica. While one of the ``required`` lists is empty (apply drained
    a pool: both pools are replaced together, or a one-replica pool restarts) the proxy is not
    run at all, so it refuses connections rather than route to half a stack, and the empty
    lists are acknowledged like any others. If the proxy exits by itself, the job ends with its
    exit status."""
    have_all = " && ".join(f"[ -s {name} ]" for name in (required or []))
    start = f"if {have_all}; then {proxy} & proxy_pid=$!; else proxy_pid=; fi" if have_all else f"{proxy} & proxy_pid=$!"
    return [
        f"endpoints_sum() {{ {{ cat {' '.join(files)} 2>/dev/null || true; }} | cksum; }}",
        "while true; do",
        "  seen=$(endpoints_sum)",
        f"  {start}",
        f'  printf \'%s\\n\' "$seen" > {ack}.tmp && mv -f {ack}.tmp {ack}',
        '  while { [ -z "$proxy_pid" ] || kill -0 "$proxy_pid" 2>/dev/null; } && [ "$(endpoints_sum)" = "$seen" ]; do sleep 2; done',
        '  if [ -n "$proxy_pid" ] && ! kill -0 "$proxy_pid" 2>/dev/null; then wait "$proxy_pid"; exit $?; fi',
        '  echo "madinfra: endpoint lists changed; restarting the proxy" >&2',
        '  if [ -n "$proxy_pid" ]; then kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null; fi',
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


POOL_ORDER = ("proxy", "prefill", "decode")
"""Global rank order of the pools: rank 0 is the proxy."""
POOL_SIZES = {
    "proxy": "1",
    "prefill": "$(( ${MADINFRA_FIRST_RANK_DECODE} - ${MADINFRA_FIRST_RANK_PREFILL} ))",
    "decode": "$(( ${NNODES} - ${MADINFRA_FIRST_RANK_DECODE} ))",
}
"""Pool sizes computed on the node from the stack's topology (first ranks and NNODES), so no
role's spec holds another pool's size (resizing one pool must leave the others' specs unchanged)."""

NODE_IPS_HELPERS = (
    "ip_of() { a=$(getent ahostsv4 \"$1\" 2>/dev/null | awk 'NR==1{print $1}'); echo \"${a:-$1}\"; }; "
    "own() { scontrol show hostnames \"${SLURM_JOB_NODELIST}\" | while read -r n; do"
    " a=$(scontrol show node \"$n\" -o | sed -n 's/.* NodeAddr=\\([^ ]*\\).*/\\1/p'); echo \"${a:-$n}\"; done; }; "
    "peers() { [ -s \"$1\" ] || return 0; awk -v src=\"$1.source\" 'BEGIN { n = 0; m = 0; top = 0; while ((getline l < src) > 0)"
    " if (l ~ /^replica\\.[0-9]+=/) { sub(/^replica\\./, \"\", l); sub(/=.*/, \"\", l); at_line[n++] = l + 0 } }"
    " NF { h = $0; sub(/^[a-z]*:\\/\\//, \"\", h); sub(/:[0-9]*$/, \"\", h); i = (m < n) ? at_line[m] : m; m++; ip[i] = h;"
    " if (i + 1 > top) top = i + 1 } END { for (i = 0; i < top; i++) print ip[i] }' \"$1\"; }; "
    "fit() { n=$1; [ \"$n\" -gt 0 ] 2>/dev/null || n=0; { cat; yes '' | head -n \"$n\"; } | head -n \"$n\"; }; "
    "put_self() { a=$(own | head -n 1); awk -v i=\"$1\" -v a=\"$a\" 'NR == i + 1 { print a; next } { print }'; }; "
)
"""Shell helpers of ``node_ips_expr``: resolve a host to its IPv4 address on the node (a numeric
address resolves to itself; an unresolvable name is kept), list this allocation's NodeAddrs in
SLURM_PROCID order, read a pool's endpoint file as hosts placed at their replica index (from the
``replica.<i>=<job id>`` lines of its ``.source`` sidecar, in the file's line order; a replica the
file does not list is an empty entry), pad or cut a list to a pool's size (a size that is not a
positive number counts as 0: GNU ``head -n -K`` would read ``yes`` forever), and put this node's
own address at a given index."""


def node_ips_expr(role: str) -> str:
    """SGLANG_NODE_IPS for ``role`` on SLURM: every node of the stack in global rank order.

    madengine runs the whole stack in one allocation and lists its IPs; here each pool replica
    is its own job, so the list is assembled on the node when the task starts: every serving
    pool from the endpoint file apply writes (its healthy replicas, each at its replica index;
    apply writes prefill's, then decode's, then starts the proxy, so a later pool's file may not
    exist yet on a first apply), with this replica's own address put at its own index
    (``MADINFRA_REPLICA_INDEX``: it is not in the file before it is healthy), and the proxy,
    which has no file, as an empty entry unless this is the proxy. Each pool is padded or cut to
    its size so every entry keeps its rank's position; a list is a snapshot taken at start, like
    any environment (a replica started later, or moved by a rolling change, is not in it).
    """
    parts = []
    for pool in POOL_ORDER:
        if pool == "proxy":
            source = "own" if role == "proxy" else "true"  # the proxy writes no endpoint file
        else:
            source = f'peers "{endpoint_file(pool)}"'
        tail = f' | put_self "${{{REPLICA_INDEX_VAR}}}"' if pool == role and role != "proxy" else ""
        parts.append(f'{source} | fit "{POOL_SIZES[pool]}"{tail}')
    pools = "; ".join(parts)
    resolve = 'while read -r h; do if [ -n "$h" ]; then ip_of "$h"; else echo; fi; done'
    return f"$({NODE_IPS_HELPERS}{{ {pools}; }} | {resolve} | paste -sd, -)"


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
    """Global rank: 0 for the proxy, else the pool's first rank (from the topology) + index: the
    pod's ordinal on K8s, the replica's index on SLURM (a replica is one node)."""
    if role == "proxy":
        return "0"
    index = "${HOSTNAME##*-}" if ctx.on_k8s else f"${{{REPLICA_INDEX_VAR}}}"
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
    if draft.role != "proxy":
        # Each SLURM pool replica is its own one-node server (TP within the node), whatever
        # the pool's size: its master is itself, so resizing a pool changes no replica's script.
        draft.set("MASTER_ADDR", "localhost")
    draft.export("SGLANG_NODE_IPS", node_ips_expr(draft.role))
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
