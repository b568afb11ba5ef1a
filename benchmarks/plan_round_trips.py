"""Remote round trips per `plan` as the stack grows (target: constant in the number of nodes).

SLURM: the real SlurmProvider against the sandbox (scripts/slurm-sandbox, target file
/tmp/madinfra-slurm-sandbox/target.json). Every command it runs over SSH and every SFTP transfer
is counted by wrapping its connection's ``run``/``write_text``/``put_file``. Plan only reads
``squeue``, so stacks larger than the sandbox's 3 nodes can be planned too.

Kubernetes is measured on the real K8s sandbox by k8s_sandbox.py.

A part whose provider or cluster is not available is skipped with a note.

Run: python benchmarks/plan_round_trips.py
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from typing import Any, Iterator

from _common import SANDBOX_TARGET, header, ms, stack_dict, table

SLURM_NODES = (1, 2, 3, 10, 100, 1000)
LAUNCHERS = ("torchrun", "sglang-disagg")


def plan_once(spec: Any, provider: Any) -> Any:
    from madinfra.engine.pipeline import compute_plan

    return compute_plan(spec, provider, None)


# -- SLURM -------------------------------------------------------------------------------------


@contextlib.contextmanager
def counting_ssh() -> Iterator[Counter]:
    """Count every remote operation of every SlurmConnection: ``run`` by the command's first
    word, SFTP writes and uploads, and connections opened."""
    from madinfra_slurm.connection import SlurmConnection

    counts: Counter = Counter()
    originals = {name: getattr(SlurmConnection, name) for name in ("run", "write_text", "put_file", "_fabric")}

    def run(self, command, **kwargs):
        counts["ssh commands"] += 1
        counts[f"cmd:{command.split()[0]}"] += 1
        return originals["run"](self, command, **kwargs)

    def write_text(self, path, text, **kwargs):
        counts["sftp writes"] += 1
        return originals["write_text"](self, path, text, **kwargs)

    def put_file(self, local, remote, **kwargs):
        counts["sftp uploads"] += 1
        return originals["put_file"](self, local, remote, **kwargs)

    def fabric(self):
        opened = self._conn is None
        conn = originals["_fabric"](self)
        if opened:
            counts["connections"] += 1
        return conn

    SlurmConnection.run, SlurmConnection.write_text, SlurmConnection.put_file, SlurmConnection._fabric = run, write_text, put_file, fabric
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(SlurmConnection, name, original)


def slurm_part() -> None:
    print("## SLURM (sandbox)\n")
    if not SANDBOX_TARGET.is_file():
        print(f"Skipped: the SLURM sandbox is not up ({SANDBOX_TARGET} is missing; run `scripts/slurm-sandbox up`).")
        return
    try:
        from madinfra_slurm import SlurmProvider
    except Exception as exc:  # noqa: BLE001 - a provider under construction is reported, not fatal
        print(f"Skipped: madinfra_slurm cannot be imported yet ({exc.__class__.__name__}: {exc}).")
        return
    from madinfra.config import resolve
    from madinfra.resources import ProviderOptions

    rows = []
    cold = None
    for launcher in LAUNCHERS:
        for nnodes in SLURM_NODES:
            if launcher == "sglang-disagg" and nnodes < 3:
                continue
            name = f"rt{uuid.uuid4().hex[:6]}"
            spec = resolve(stack_dict("slurm", launcher, nnodes, name=name))
            provider = SlurmProvider(ProviderOptions(ssh_target=str(SANDBOX_TARGET)))
            try:
                if cold is None:  # the first plan also imports Fabric/Paramiko: timed apart
                    start = time.perf_counter()
                    plan_once(spec, SlurmProvider(ProviderOptions(ssh_target=str(SANDBOX_TARGET))))
                    cold = time.perf_counter() - start
                with counting_ssh() as counts:
                    start = time.perf_counter()
                    result = plan_once(spec, provider)
                    elapsed = time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001
                print(f"Skipped: planning a SLURM stack on the sandbox failed ({exc.__class__.__name__}: {exc}).")
                return
            finally:
                provider.close()
            commands = ", ".join(f"{key[4:]} x{n}" for key, n in sorted(counts.items()) if key.startswith("cmd:")) or "-"
            rows.append([launcher, nnodes, len(result.desired), counts["connections"], counts["ssh commands"], commands,
                         counts["sftp writes"] + counts["sftp uploads"], len(result.changes), ms(elapsed)])
    print("One `plan` per row (fresh provider, so a new SSH connection each time; stack not deployed, so every job is a create).")
    print(f"The very first plan, which also imports Fabric and Paramiko, took {ms(cold or 0):.0f} ms and is not in the table.\n")
    print(table(["launcher", "nnodes", "resources", "SSH connections", "SSH commands", "commands run", "SFTP transfers", "planned changes", "plan wall ms"], rows))
    counts = {row[4] for row in rows}
    verdict = "constant" if len(counts) == 1 else "NOT constant"
    print(f"\nSSH commands per plan: {sorted(counts)} -> {verdict} in the number of nodes (target: one squeue per stack).")



def main() -> None:
    header("Remote round trips per plan")
    slurm_part()
    print("\nKubernetes: see k8s_sandbox.py (list calls per plan on the real K8s sandbox).")


if __name__ == "__main__":
    main()
