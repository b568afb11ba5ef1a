"""A stand-in for ``vllm serve`` on a Ray cluster, for the SLURM sandbox Ray test (vLLM cannot
run here). It does what matters to madinfra of vLLM's start-up on Ray, with real Ray:

- joins the cluster the head's supervisor started (``ray.init`` at ``$MASTER_ADDR:6379``) and
  fails unless it has TP x PP GPUs (``VLLM_TENSOR_PARALLEL_SIZE`` x ``VLLM_PIPELINE_PARALLEL_SIZE``,
  the latter from the stack's topology), as vLLM does;
- places one pipeline stage per node (a placement group, ``STRICT_SPREAD``) and runs a task in
  each stage, so every node must really be in the cluster;
- then serves on 127.0.0.1:PORT: ``/health``, ``/v1/models`` and ``/info`` (the sizes it started
  with, the Ray node of each stage, its pid and any ``--tag`` argument).

    python3 standin_ray_engine.py --port PORT [--tag TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


@ray.remote
def stage_node() -> str:
    return ray.get_runtime_context().get_node_id()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    tp = int(os.environ["VLLM_TENSOR_PARALLEL_SIZE"])
    pp = int(os.environ["VLLM_PIPELINE_PARALLEL_SIZE"])
    ray.init(address=f"{os.environ['MASTER_ADDR']}:6379", logging_level="ERROR")
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus != tp * pp:
        print(f"standin engine: the cluster has {gpus} GPUs, TP {tp} x PP {pp} needs {tp * pp}", flush=True)
        return 1
    group = placement_group([{"GPU": tp}] * pp, strategy="STRICT_SPREAD")
    ray.get(group.ready(), timeout=60)
    stages = ray.get([
        stage_node.options(num_cpus=0, num_gpus=tp, scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)).remote()
        for i in range(pp)
    ])
    info = {"tp": tp, "pp": pp, "stages": stages, "pid": os.getpid(), "tag": args.tag, "nnodes": os.environ.get("NNODES")}
    print(f"standin engine: serving with TP {tp} x PP {pp} on {len(set(stages))} node(s)", flush=True)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            bodies = {"/health": {}, "/v1/models": {"data": [{"id": "standin"}]}, "/info": info}
            body = bodies.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body or {}).encode())

        def log_message(self, *_: object) -> None:
            return

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
