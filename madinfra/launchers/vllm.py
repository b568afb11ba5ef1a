"""vLLM: no runner; the server manages its own workers.

- Single node: TP = P, PP = 1, backend ``auto`` (no Ray).
- K8s multi-node: every pod is an independent replica (data parallel behind the Service):
  each starts its own one-node Ray head and serves with TP = P, PP = 1, backend ``ray``.
- SLURM multi-node: one model across the nodes (the guide's TP + PP with a Ray cluster), PP = N,
  as two roles (``ray_cluster.py``): ``server``, the Ray head, which runs the server once every
  node has joined and restarts it (not the head) when the cluster changes, and
  ``server-workers``, the other N - 1 nodes joining it. The cluster's size is the stack's
  topology, so resizing replaces only the workers.

``distributed.vllm_backend`` overrides VLLM_DISTRIBUTED_BACKEND. vLLM finds its driver node by
comparing VLLM_HOST_IP with Ray's node IPs, so Ray is started on that same address.
"""

from __future__ import annotations

import dataclasses

from madinfra.errors import MadinfraError
from madinfra.launchers import ray_cluster
from madinfra.launchers.common import (
    RAY_PORT,
    VLLM_PORT,
    LaunchContext,
    export_pod_ip,
    finish,
    server_lines,
    start_role,
)
from madinfra.launchers.model import RayPart, RoleLaunch


def service_port(ctx: LaunchContext) -> int:
    return ctx.service_port(VLLM_PORT)


def backend(ctx: LaunchContext) -> str:
    return ctx.spec.distributed.vllm_backend or ("ray" if ctx.multi_node else "auto")


def pipeline_size(ctx: LaunchContext) -> int:
    return ctx.nnodes if ctx.multi_node and not ctx.on_k8s else 1


def ray_across_jobs(ctx: LaunchContext) -> bool:
    """SLURM multi-node with Ray: the cluster is a head job plus a workers job."""
    return ctx.multi_node and not ctx.on_k8s and backend(ctx) == "ray"


def topology(ctx: LaunchContext) -> dict[str, str]:
    """The Ray cluster's size, out of both jobs' scripts (``ray_cluster.py``); none otherwise."""
    return ray_cluster.topology(ctx) if ray_across_jobs(ctx) else {}


def serve_command(ctx: LaunchContext) -> str:
    pipeline = '"${VLLM_PIPELINE_PARALLEL_SIZE}"' if ray_across_jobs(ctx) else pipeline_size(ctx)
    command = (
        f'vllm serve "$MODEL_PATH" --tensor-parallel-size {ctx.nproc}'
        f" --pipeline-parallel-size {pipeline} --host 0.0.0.0 --port {service_port(ctx)}"
    )
    if backend(ctx) == "ray":
        command += " --distributed-executor-backend ray"
    return command


def roles(ctx: LaunchContext) -> list[RoleLaunch]:
    if ray_across_jobs(ctx):
        return _ray_cluster_roles(ctx)
    if ctx.multi_node and not ctx.on_k8s:
        raise MadinfraError(
            f"Stack '{ctx.stack}': multi-node vLLM on SLURM runs one model across the nodes with a Ray "
            f"cluster, so distributed.vllm_backend must be 'ray' (got '{backend(ctx)}'); remove it or set it to 'ray'."
        )
    draft = start_role(ctx, "server", ctx.nnodes, 0, ctx.gpus, ray_style=True)
    draft.set("VLLM_TENSOR_PARALLEL_SIZE", ctx.nproc)
    draft.set("VLLM_PIPELINE_PARALLEL_SIZE", pipeline_size(ctx))
    draft.set("VLLM_DISTRIBUTED_BACKEND", backend(ctx))
    draft.ports["http"] = service_port(ctx)
    server = server_lines(ctx, serve_command(ctx))
    if not ctx.multi_node:
        draft.run(*server)
        return [finish(ctx, draft)]
    # Kubernetes: every pod is a one-node Ray cluster of its own.
    export_pod_ip(ctx, draft)
    draft.export("VLLM_HOST_IP", "${POD_IP}")
    uses_ray = backend(ctx) == "ray"
    if uses_ray:
        draft.ports["ray"] = RAY_PORT
    head = f"ray stop --force; ray start --head --port={RAY_PORT} --node-ip-address=${{POD_IP}} --num-gpus={ctx.nproc} || exit 1"
    draft.run(*((head,) if uses_ray else ()), *server)
    return [finish(ctx, draft)]


def _ray_cluster_roles(ctx: LaunchContext) -> list[RoleLaunch]:
    """The head (rank 0: Ray head, supervisor, server) and the workers (ranks 1..N-1)."""
    cluster = "server"
    head = start_role(ctx, cluster, 1, 0, ctx.gpus, ray_style=True)
    workers = start_role(ctx, ray_cluster.workers_role(cluster), ctx.nnodes - 1, 1, ctx.gpus, ray_style=True)
    for draft in (head, workers):
        draft.set("VLLM_TENSOR_PARALLEL_SIZE", ctx.nproc)
        draft.set("VLLM_DISTRIBUTED_BACKEND", "ray")
        draft.export("VLLM_HOST_IP", ctx.self_ip())
        ray_cluster.drop_topology(draft)
    head.export("MASTER_ADDR", "${VLLM_HOST_IP}")
    workers.remove("MASTER_ADDR")  # the head's address: the join loop exports it from the status file
    head.ports.update(http=service_port(ctx), ray=RAY_PORT, ray_dashboard=ray_cluster.RAY_DASHBOARD_PORT)
    override = ctx.spec.roles.get(cluster)
    engine = override.command if override is not None and override.command else "\n".join(server_lines(ctx, serve_command(ctx)))
    head.run(*ray_cluster.head_lines(ctx, cluster, engine))
    workers.run(*ray_cluster.worker_lines(ctx, cluster))
    return [
        _with_ray(finish(ctx, head, command_override=False), ray_cluster.part("head", cluster, ctx.nnodes)),
        _with_ray(finish(ctx, workers, settings_role=cluster, command_override=False), ray_cluster.part("workers", cluster, ctx.nnodes)),
    ]


def _with_ray(role: RoleLaunch, part: RayPart) -> RoleLaunch:
    return dataclasses.replace(role, ray=part)
