"""vLLM: no runner; the server manages its own workers.

- Single node: TP = P, PP = 1, backend ``auto`` (no Ray).
- K8s multi-node: every pod is an independent replica (data parallel behind the Service):
  each starts its own one-node Ray head and serves with TP = P, PP = 1, backend ``ray``.
- SLURM multi-node: one model across the allocation (the guide's TP + PP with a Ray cluster):
  PP = N, rank 0 starts the Ray head, waits for every node, and alone runs the server; the
  other ranks join the head and block.

``distributed.vllm_backend`` overrides VLLM_DISTRIBUTED_BACKEND. vLLM finds its driver node by
comparing VLLM_HOST_IP with Ray's node IPs, so Ray is started on that same address.
"""

from __future__ import annotations

from madinfra.errors import MadinfraError
from madinfra.launchers.common import (
    MASTER_REF,
    RAY_PORT,
    VLLM_PORT,
    LaunchContext,
    export_pod_ip,
    finish,
    server_lines,
    start_role,
)
from madinfra.launchers.model import RoleLaunch


def service_port(ctx: LaunchContext) -> int:
    return ctx.service_port(VLLM_PORT)


def backend(ctx: LaunchContext) -> str:
    return ctx.spec.distributed.vllm_backend or ("ray" if ctx.multi_node else "auto")


def pipeline_size(ctx: LaunchContext) -> int:
    return ctx.nnodes if ctx.multi_node and not ctx.on_k8s else 1


def serve_command(ctx: LaunchContext) -> str:
    command = (
        f'vllm serve "$MODEL_PATH" --tensor-parallel-size {ctx.nproc}'
        f" --pipeline-parallel-size {pipeline_size(ctx)} --host 0.0.0.0 --port {service_port(ctx)}"
    )
    if backend(ctx) == "ray":
        command += " --distributed-executor-backend ray"
    return command


def wait_for_ray_nodes(count: int, timeout: int) -> str:
    """vLLM checks the cluster's GPUs once at start-up, so rank 0 waits for all nodes first."""
    return (
        "python3 -c 'import ray, sys, time\n"
        'ray.init(address="auto", logging_level="ERROR")\n'
        "alive = lambda: sum(1 for n in ray.nodes() if n[\"Alive\"])\n"
        f"deadline = time.time() + {timeout}\n"
        f"while alive() < {count} and time.time() < deadline:\n"
        "    time.sleep(2)\n"
        f"sys.exit(0 if alive() >= {count} else 1)' || exit 1"
    )


def roles(ctx: LaunchContext) -> list[RoleLaunch]:
    draft = start_role(ctx, "server", ctx.nnodes, 0, ctx.gpus, ray_style=True)
    draft.set("VLLM_TENSOR_PARALLEL_SIZE", ctx.nproc)
    draft.set("VLLM_PIPELINE_PARALLEL_SIZE", pipeline_size(ctx))
    draft.set("VLLM_DISTRIBUTED_BACKEND", backend(ctx))
    draft.ports["http"] = service_port(ctx)
    server = server_lines(ctx, serve_command(ctx))
    if not ctx.multi_node:
        draft.run(*server)
        return [finish(ctx, draft)]
    export_pod_ip(ctx, draft)
    draft.export("VLLM_HOST_IP", "${POD_IP}" if ctx.on_k8s else ctx.self_ip())
    uses_ray = backend(ctx) == "ray"
    if uses_ray:
        draft.ports["ray"] = RAY_PORT
    node_ip = "${POD_IP}" if ctx.on_k8s else "${VLLM_HOST_IP}"
    head = f"ray stop --force; ray start --head --port={RAY_PORT} --node-ip-address={node_ip} --num-gpus={ctx.nproc} || exit 1"
    if ctx.on_k8s:
        draft.run(*((head,) if uses_ray else ()), *server)
        return [finish(ctx, draft)]
    if not uses_ray:
        raise MadinfraError(
            f"Stack '{ctx.stack}': multi-node vLLM on SLURM runs one model across the nodes with a Ray "
            f"cluster, so distributed.vllm_backend must be 'ray' (got '{backend(ctx)}'); remove it or set it to 'ray'."
        )
    assert ctx.spec.slurm is not None
    rank = ctx.rank("server", 0, ctx.nnodes)
    draft.run(
        f'if [ "{rank}" -eq 0 ]; then',
        head,
        wait_for_ray_nodes(ctx.nnodes, ctx.spec.slurm.ready_timeout),
        *server,
        "else",
        f'ray stop --force; ray start --address="{MASTER_REF}:{RAY_PORT}" --node-ip-address={node_ip}'
        f" --num-gpus={ctx.nproc} --block",
        "fi",
    )
    return [finish(ctx, draft)]
