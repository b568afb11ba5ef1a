"""SGLang: no runner; ``sglang.launch_server`` spans nodes natively (no Ray start needed).

TP = P, PP = 1 on every node count. Multi-node: every node runs the same server command with
``--nnodes/--node-rank/--dist-init-addr``; rank 0 serves HTTP. SGLANG_HOST_IP is the node's
own address and NCCL_INIT_ADDR the master's ``host:port``, as madengine exports them.
"""

from __future__ import annotations

from madinfra.launchers.common import (
    MASTER_REF,
    SGLANG_PORT,
    LaunchContext,
    export_pod_ip,
    finish,
    server_lines,
    start_role,
)
from madinfra.launchers.model import RoleLaunch


def service_port(ctx: LaunchContext) -> int:
    return ctx.service_port(SGLANG_PORT)


def server_command(ctx: LaunchContext) -> str:
    command = (
        f'python3 -m sglang.launch_server --model-path "$MODEL_PATH" --tp-size {ctx.nproc}'
        f" --host 0.0.0.0 --port {service_port(ctx)}"
    )
    if ctx.multi_node:
        command += (
            f" --nnodes {ctx.nnodes} --node-rank {ctx.rank('server', 0, ctx.nnodes)}"
            f" --dist-init-addr {MASTER_REF}:{ctx.port}"
        )
    return command


def roles(ctx: LaunchContext) -> list[RoleLaunch]:
    draft = start_role(ctx, "server", ctx.nnodes, 0, ctx.gpus, ray_style=True)
    draft.set("SGLANG_TENSOR_PARALLEL_SIZE", ctx.nproc)
    draft.set("SGLANG_PIPELINE_PARALLEL_SIZE", 1)
    draft.ports["http"] = service_port(ctx)
    if ctx.multi_node:
        draft.ports["master"] = ctx.port
        export_pod_ip(ctx, draft)
        draft.export("SGLANG_HOST_IP", "${POD_IP}" if ctx.on_k8s else ctx.self_ip())
        draft.export("NCCL_INIT_ADDR", f"{MASTER_REF}:{ctx.port}")
    draft.run(*server_lines(ctx, server_command(ctx)))
    return [finish(ctx, draft)]
