"""CLI start-up: wall and CPU time of `madinfra --help` and `madinfra validate <stack>`.

Each command runs N times in a fresh process (median reported), next to a bare `python -c pass`
so the interpreter's own start-up is visible. Then `python -X importtime` lists the modules that
cost most, and which heavy modules (Pulumi, the kubernetes client, Fabric/Paramiko, deepdiff)
were imported at all: the target is none of them for `--help` and `validate`, under 0.3 s.

Run: python benchmarks/cli_startup.py [--runs N] [--top K]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, checkout_env, header, ms, table

HEAVY = ("pulumi", "pulumi_kubernetes", "kubernetes", "fabric", "paramiko", "invoke", "deepdiff", "grpc")
TARGET_S = 0.3
VALIDATE_STACKS = (ROOT / "stacks" / "slurm" / "sglang-disagg.yaml", ROOT / "stacks" / "k8s" / "vllm-multi-node.yaml")
RENDER_STACK = ROOT / "stacks" / "sandbox" / "allreduce.yaml"
LIBRARY_FLOOR = "import typer, typer._adapters, pydantic.main, yaml"
"""What any typer + pydantic + yaml command pays before its own code runs (typer 0.29 imports
pydantic itself, in typer._adapters, to convert arguments)."""


def console_script() -> list[str]:
    """The installed ``madinfra`` script next to this interpreter (not a pyenv shim, whose own
    bash + pyenv start-up is not madinfra's), else ``python -m madinfra``."""
    script = Path(sys.executable).parent / "madinfra"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "madinfra"]


def timed_runs(commands: list[list[str]], runs: int) -> list[tuple[float, float, int]]:
    """Per command: (median wall s, median CPU s of the child, exit code of the last run).

    The commands take turns (round robin), so a burst of load from elsewhere on the machine
    slows all of them alike instead of skewing one."""
    walls: list[list[float]] = [[] for _ in commands]
    cpus: list[list[float]] = [[] for _ in commands]
    codes = [0 for _ in commands]
    env = checkout_env(NO_COLOR="1")
    for _ in range(runs):
        for index, argv in enumerate(commands):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            codes[index] = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env).returncode
            walls[index].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[index].append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return [(statistics.median(w), statistics.median(c), code) for w, c, code in zip(walls, cpus, codes)]


def import_times(args: list[str]) -> list[tuple[str, int, int]]:
    """(module, self µs, cumulative µs) for every import of ``python -X importtime -m madinfra ARGS``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "madinfra", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=checkout_env(NO_COLOR="1"),
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        if not parts[0].strip().isdigit():
            continue
        rows.append((parts[2].strip(), int(parts[0]), int(parts[1])))
    return rows


def top_level_offenders(rows: list[tuple[str, int, int]], top: int) -> list[tuple[str, float]]:
    """Cumulative import time by top-level package (self times summed), largest first."""
    by_package: dict[str, int] = {}
    for module, self_us, _ in rows:
        package = module.split(".")[0]
        by_package[package] = by_package.get(package, 0) + self_us
    ranked = sorted(by_package.items(), key=lambda item: item[1], reverse=True)[:top]
    return [(name, us / 1000.0) for name, us in ranked]


def heavy_imported(rows: list[tuple[str, int, int]]) -> list[str]:
    found = {module.split(".")[0] for module, _, _ in rows}
    return sorted(name for name in HEAVY if name in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs per command (median reported)")
    parser.add_argument("--top", type=int, default=10, help="packages listed per importtime table")
    args = parser.parse_args()

    header("CLI start-up")
    script = console_script()
    shown = "madinfra" if len(script) == 1 else "python -m madinfra"
    commands: list[tuple[str, list[str], bool]] = [
        ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"], False),
        ("python -c 'import typer, pydantic, yaml' (library floor)", [sys.executable, "-c", LIBRARY_FLOOR], False),
        (f"{shown} --help", [*script, "--help"], True),
    ]
    for stack in VALIDATE_STACKS:
        commands.append((f"{shown} validate {stack.relative_to(ROOT)}", [*script, "validate", str(stack)], True))
    commands.append((f"{shown} render {RENDER_STACK.relative_to(ROOT)} (no target)", [*script, "render", str(RENDER_STACK)], False))
    commands.append(("python -m madinfra --help", [sys.executable, "-m", "madinfra", "--help"], False))

    rows = []
    measured = timed_runs([argv for _, argv, _ in commands], args.runs)
    for (label, _, targeted), (wall, cpu, code) in zip(commands, measured):
        verdict = ("yes" if wall < TARGET_S else "NO") if targeted else "-"
        rows.append([label, ms(wall), ms(cpu), code, verdict])
    print(f"Median of {args.runs} runs, each in a fresh process, commands taking turns; target under {TARGET_S * 1000:.0f} ms for --help and validate.\n")
    print(table(["command", "wall ms", "CPU ms", "exit", "under 0.3 s"], rows))

    for label, cli_args in (("--help", ["--help"]), (f"validate {VALIDATE_STACKS[0].relative_to(ROOT)}", ["validate", str(VALIDATE_STACKS[0])])):
        imports = import_times(cli_args)
        total = sum(self_us for _, self_us, _ in imports) / 1000.0
        heavy = heavy_imported(imports)
        print(f"\n`python -X importtime -m madinfra {label}`: {len(imports)} modules, {total:.0f} ms of imports in all;")
        print(f"heavy modules imported: {', '.join(heavy) if heavy else 'none'} (checked: {', '.join(HEAVY)})\n")
        print(table(["package", "import ms (self times summed)"], top_level_offenders(imports, args.top)))


if __name__ == "__main__":
    main()
