"""Apply latency on the SLURM sandbox for create, in-place update, replace (and destroy), with the
share of the time spent in SSH.

Each round deploys a fresh one-node stack whose worker runs `sleep` (so the job stays RUNNING),
then changes its time limit (an in-place `scontrol update`), then an environment value (the
script changes, so the running job is replaced), then destroys it. Every step goes through the
engine exactly as `madinfra apply --yes` does (open_stack -> compute_plan -> apply_plan, state
written after every change) with the real SlurmProvider. Time inside the SSH connection's
``run``/``write_text``/``put_file`` is summed, and so is the time the provider sleeps between
``squeue`` polls while it waits for a job to start or end.

Needs the sandbox (scripts/slurm-sandbox up; /tmp/madinfra-slurm-sandbox/target.json).
Run: python benchmarks/apply_latency.py [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from _common import SANDBOX_TARGET, header, ms, table

STEPS = ("create", "update in place", "replace", "destroy")


class Meter:
    """Wall time inside SSH operations and inside the provider's sleeps, per measured step."""

    def __init__(self) -> None:
        self.ssh = 0.0
        self.connect = 0.0
        self.sleep = 0.0
        self.commands = 0
        self.transfers = 0
        self.words: Counter = Counter()

    def reset(self) -> None:
        self.__init__()

    def sleeper(self) -> Callable[[float], None]:
        def sleep(seconds: float) -> None:
            start = time.perf_counter()
            time.sleep(seconds)
            self.sleep += time.perf_counter() - start

        return sleep


@contextlib.contextmanager
def metered_ssh(meter: Meter) -> Iterator[None]:
    """Time every remote operation of every SlurmConnection (connection set-up included, since
    it happens inside the first operation)."""
    from madinfra_slurm.connection import SlurmConnection

    originals = {name: getattr(SlurmConnection, name) for name in ("run", "write_text", "put_file", "_fabric")}

    def fabric(self):
        opening = self._conn is None
        start = time.perf_counter()
        try:
            return originals["_fabric"](self)
        finally:
            if opening:
                meter.connect += time.perf_counter() - start

    def timed(name: str) -> Callable[..., Any]:
        original = originals[name]

        def wrapper(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                meter.ssh += time.perf_counter() - start
                if name == "run":
                    meter.commands += 1
                    meter.words[_first_program(args[0] if args else kwargs.get("command", ""))] += 1
                else:
                    meter.transfers += 1

        return wrapper

    for name in ("run", "write_text", "put_file"):
        setattr(SlurmConnection, name, timed(name))
    SlurmConnection._fabric = fabric
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(SlurmConnection, name, original)


def _first_program(command: str) -> str:
    """The SLURM (or shell) program a command is about: ``cd DIR && sbatch X`` -> sbatch."""
    words = [w for w in command.replace("&&", " ").replace(";", " ").split() if w.isidentifier() or w in ("rm", "mkdir", "chmod")]
    for word in words:
        if word in ("squeue", "sbatch", "scontrol", "scancel", "srun"):
            return word
    return words[0] if words else "?"


def stack_text(name: str, time_limit: str, marker: str) -> str:
    return yaml.safe_dump(
        {
            "name": name,
            "slurm": {"partition": "debug", "gpus_per_node": 1, "time": time_limit, "exclusive": False},
            "distributed": {"launcher": "torchrun", "nnodes": 1, "nproc_per_node": 1, "backend": "gloo"},
            "model": {"script": "unused.py"},
            "env_vars": {"BENCH_MARKER": marker},
            "roles": {"worker": {"command": "sleep 900"}},
        },
        sort_keys=False,
    )


def run_step(stack_file: Path, state_dir: Path, meter: Meter, *, destroy: bool = False) -> dict[str, Any]:
    """One `apply --yes` (or `destroy --yes`) through the engine; timings of plan and apply."""
    from madinfra.engine.pipeline import compute_plan, open_stack, rules_for
    from madinfra.engine.run import apply_plan
    from madinfra.resources import ProviderOptions
    from madinfra_slurm import SlurmProvider

    meter.reset()
    options = ProviderOptions(ssh_target=str(SANDBOX_TARGET))
    start = time.perf_counter()
    ctx = open_stack(stack_file, state_dir, options, provider_factory=lambda target, opts: SlurmProvider(opts, sleep=meter.sleeper()))
    try:
        state = ctx.store.load_or_new(ctx.name)
        plan = compute_plan(ctx.spec, ctx.provider, state, stack_file=stack_file, fingerprint=ctx.fingerprint, destroy=destroy)
        planned = time.perf_counter()
        plan_ssh = meter.ssh
        result = apply_plan(plan, ctx.provider, ctx.store, state, rules_for(ctx.provider), lambda rid, message: None)
        done = time.perf_counter()
    finally:
        ctx.close()
    if not result.ok:
        raise RuntimeError(f"apply failed: {result.failed or result.skipped}")
    actions = sorted({c.action for c in plan.changes})
    return {
        "actions": "/".join(actions) or "none",
        "plan": planned - start,
        "apply": done - planned,
        "total": done - start,
        "ssh": meter.ssh,
        "connect": meter.connect,
        "apply_ssh": meter.ssh - plan_ssh,
        "sleep": meter.sleep,
        "commands": meter.commands,
        "transfers": meter.transfers,
        "words": ", ".join(f"{word} x{n}" for word, n in sorted(meter.words.items())),
    }


def cleanup(name: str) -> None:
    """Cancel whatever a failed round left behind and remove its remote directory."""
    config = SANDBOX_TARGET.parent / "ssh_config"
    script = f"ids=$(squeue -h --me -o '%i %j' | awk '$2 ~ /^madinfra\\.{name}\\./ {{print $1}}'); [ -n \"$ids\" ] && scancel $ids; rm -rf ~/.madinfra/{shlex.quote(name)}"
    subprocess.run(["ssh", "-F", str(config), "madinfra-sandbox", script], capture_output=True, timeout=60, check=False)


def one_round(workdir: Path, meter: Meter) -> dict[str, dict[str, Any]]:
    name = f"lat{uuid.uuid4().hex[:6]}"
    stack_file = workdir / name / "stack.yaml"
    stack_file.parent.mkdir(parents=True)
    (stack_file.parent / "unused.py").write_text("print('not run: the worker command is overridden')\n")
    state_dir = stack_file.parent / ".madinfra" / "state"
    results: dict[str, dict[str, Any]] = {}
    try:
        stack_file.write_text(stack_text(name, "00:10:00", "one"))
        results["create"] = run_step(stack_file, state_dir, meter)
        stack_file.write_text(stack_text(name, "00:20:00", "one"))
        results["update in place"] = run_step(stack_file, state_dir, meter)
        stack_file.write_text(stack_text(name, "00:20:00", "two"))
        results["replace"] = run_step(stack_file, state_dir, meter)
        results["destroy"] = run_step(stack_file, state_dir, meter, destroy=True)
        results["plan after destroy"] = run_step(stack_file, state_dir, meter, destroy=True)
    finally:
        cleanup(name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="create/update/replace/destroy rounds (median reported)")
    args = parser.parse_args()

    header("Apply latency on the SLURM sandbox")
    if not SANDBOX_TARGET.is_file():
        print(f"Skipped: the SLURM sandbox is not up ({SANDBOX_TARGET} is missing; run `scripts/slurm-sandbox up`).")
        return
    try:
        import madinfra_slurm  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        print(f"Skipped: madinfra_slurm cannot be imported yet ({exc.__class__.__name__}: {exc}).")
        return

    meter = Meter()
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="madinfra-latency-") as tmp, metered_ssh(meter):
        for _ in range(args.rounds):
            rounds.append(one_round(Path(tmp), meter))

    by_step: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for results in rounds:
        for step, row in results.items():
            by_step[step].append(row)

    def med(step: str, key: str) -> float:
        return statistics.median(row[key] for row in by_step[step])

    rows = []
    for step in (*STEPS, "plan after destroy"):
        total, ssh, sleep = med(step, "total"), med(step, "ssh"), med(step, "sleep")
        rows.append([
            step,
            by_step[step][0]["actions"],
            ms(total),
            ms(med(step, "plan")),
            ms(med(step, "apply")),
            ms(ssh),
            f"{100 * ssh / total:.0f}%",
            ms(med(step, "connect")),
            ms((ssh - med(step, "connect")) / max(1, med(step, "commands") + med(step, "transfers"))),
            ms(sleep),
            f"{100 * sleep / total:.0f}%",
            f"{100 * max(0.0, total - ssh - sleep) / total:.0f}%",
            int(med(step, "commands")),
            int(med(step, "transfers")),
            by_step[step][-1]["words"],
        ])
    print(f"Median of {args.rounds} rounds; one-node torchrun stack whose worker runs `sleep 900`; each step is a fresh")
    print("`apply --yes` through the engine (new SSH connection, plan, apply, state written). SSH = time inside the")
    print("connection's run/write_text/put_file, connection set-up included (also shown alone); ms per round trip = (SSH - connect) /")
    print("(commands + transfers); waiting = the provider sleeping between squeue polls. Each column is its own median,")
    print("so the shares of a row need not add up to 100 %.\n")
    print(table(["step", "planned", "total ms", "plan ms", "apply ms", "SSH ms", "SSH share", "of which connect ms", "ms per round trip", "waiting ms", "waiting share", "local share", "SSH commands", "SFTP transfers", "commands (last round)"], rows))


if __name__ == "__main__":
    main()
