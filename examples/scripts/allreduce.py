"""all_reduce smoke test for any multi-node launcher (torchrun, DeepSpeed, ...).

Every rank contributes ``rank + 1``; after a SUM all_reduce each rank must hold
``world * (world + 1) / 2``. Each rank prints one line such as
``allreduce rank=1 world=2 value=3 expected=3 OK`` and exits non-zero on a mismatch, so a
scheduler's exit status and the job log both tell whether the process group really worked.
Runs on CPU with gloo when no GPU is visible (the SLURM sandbox), on NCCL/RCCL otherwise.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def main() -> int:
    backend = os.environ.get("ALLREDUCE_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if backend == "nccl" else torch.device("cpu")
    value = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    expected = world * (world + 1) / 2
    ok = value.item() == expected
    node = os.environ.get("SLURMD_NODENAME") or os.environ.get("HOSTNAME", "?")
    print(
        f"allreduce rank={rank} world={world} node={node} value={value.item():g} expected={expected:g} {'OK' if ok else 'MISMATCH'}",
        flush=True,
    )
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
