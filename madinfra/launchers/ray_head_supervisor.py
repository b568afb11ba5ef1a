"""The program a Ray head job runs on its node: the Ray head, and the engine on top of it.

It is not imported by madinfra: ``ray_cluster.head_lines`` embeds this file's text in the head
job's script, and ``python3 -`` runs it on the node (standard library plus ``ray``, which every
vLLM image has). It exists so that the Ray head outlives its workers:

- ``ray start --head --block`` runs as a child for the whole job: the GCS (``--port``) and the
  dashboard stay up whatever happens to the workers or the engine.
- Once the GCS answers, the status file says so (``gcs=up``, the address and the dashboard),
  and from then on, every ``--poll`` seconds, how many nodes are alive, how many the stack
  expects (``NNODES`` in the stack's topology file, read again every time, so a resize that
  rewrites it is seen without restarting the head) and what the engine is doing. The status
  file is how the workers find the head, how apply judges readiness and how ``show`` and
  ``output`` report the cluster.
- The engine (``vllm serve`` with a pipeline stage per node, or the user's command) starts
  once exactly the expected number of nodes is alive, with the topology's values in its
  environment. vLLM sizes its pipeline once, at start, so when the alive count or the
  expectation changes (a worker job replaced, a resize), the engine is stopped and started
  again when the cluster is whole: the engine restarts, the head does not.
- SIGTERM (scancel) stops the engine, then the head; the status file goes with them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable

STOP_GRACE_SECONDS = 15
"""How long the engine may take to exit after SIGTERM before it is killed."""
RESTART_BACKOFF_SECONDS = 5
"""Pause after the engine exited by itself, so a crashing engine does not spin."""


def parse_topology(text: str) -> dict[str, str]:
    """``export K='v'`` lines (the SLURM provider's ``topology.env``) as a dict."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("export "):
            continue
        try:
            words = shlex.split(line[len("export "):])
        except ValueError:
            continue
        for word in words:
            name, sep, value = word.partition("=")
            if sep and name:
                values[name] = value
    return values


def status_text(fields: dict[str, Any]) -> str:
    return "".join(f"{key}={fields[key]}\n" for key in sorted(fields))


def write_status(path: str, fields: dict[str, Any]) -> None:
    """Atomically, so a reader never sees half a file."""
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(status_text(fields))
    os.replace(temporary, path)


def log(message: str) -> None:
    print(f"madinfra ray-head: {message}", flush=True)


class Supervisor:
    """One head's lifetime; ``alive_nodes`` and ``spawn`` are injected so tests can drive it."""

    def __init__(
        self,
        args: argparse.Namespace,
        alive_nodes: Callable[[], int],
        spawn: Callable[[str, dict[str, str]], Any],
        clock: Callable[[], float] = time.time,
    ):
        self.args = args
        self.alive_nodes = alive_nodes
        self.spawn = spawn
        self.clock = clock
        self.engine: Any = None
        self.engine_nodes = 0
        self.engine_expected = 0
        self.restarts = 0
        self.state = "waiting"
        self.last_exit: int | None = None
        self.resume_at = 0.0
        self.announced = ""

    def topology(self) -> dict[str, str]:
        try:
            with open(self.args.topology, encoding="utf-8") as handle:
                return parse_topology(handle.read())
        except OSError:
            return {}

    def expected(self, topology: dict[str, str]) -> int:
        try:
            return int(topology.get("NNODES", ""))
        except ValueError:
            return 0

    def step(self) -> dict[str, Any]:
        """One poll: look at the cluster, start, stop or keep the engine; the status fields."""
        topology = self.topology()
        expected = self.expected(topology)
        try:
            alive: int | None = self.alive_nodes()
        except Exception as exc:  # the GCS did not answer this time; the head process is checked by main
            alive = None
            self.say(f"the GCS did not answer ({type(exc).__name__}: {exc})")
        if self.engine is not None:
            code = self.engine.poll()
            if code is not None:
                self.engine = None
                self.last_exit = code
                self.restarts += 1
                self.state = "exited"
                self.resume_at = self.clock() + RESTART_BACKOFF_SECONDS
                log(f"the engine exited with code {code}; it starts again when the cluster has all {expected} node(s)")
            elif alive is not None and (alive != self.engine_nodes or expected != self.engine_expected):
                log(f"the cluster changed ({self.engine_nodes} -> {alive} node(s) alive, {self.engine_expected} -> {expected} expected): restarting the engine")
                self.stop_engine()
                self.restarts += 1
                self.state = "waiting"
        if self.engine is None and alive is not None:
            if alive == expected and expected > 0 and self.clock() >= self.resume_at:
                env = dict(os.environ)
                env.update(topology)
                log(f"all {expected} node(s) joined: starting the engine")
                self.engine = self.spawn(self.args.engine, env)
                self.engine_nodes, self.engine_expected = alive, expected
                self.state = "running"
            elif self.state != "exited" or self.clock() >= self.resume_at:
                self.state = "waiting"
                self.say(f"waiting for {expected} node(s) to join ({alive} alive)")
        fields: dict[str, Any] = {
            "job": os.environ.get("SLURM_JOB_ID", ""),
            "address": f"{self.args.node_ip}:{self.args.port}",
            "dashboard": f"http://{self.args.node_ip}:{self.args.dashboard_port}",
            "gcs": "up" if alive is not None else "not answering",
            "nodes_alive": "" if alive is None else alive,
            "nodes_expected": expected,
            "engine": self.state,
            "engine_restarts": self.restarts,
            "updated": int(self.clock()),
        }
        if self.last_exit is not None:
            fields["engine_last_exit"] = self.last_exit
        return fields

    def say(self, message: str) -> None:
        if message != self.announced:
            log(message)
            self.announced = message

    def stop_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is None or engine.poll() is not None:
            return
        try:
            os.killpg(engine.pid, signal.SIGTERM)
            engine.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(engine.pid, signal.SIGKILL)
            engine.wait()
        except ProcessLookupError:
            pass


def die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies. Where Slurm tracks a job's processes by their
    parentage (``proctrack/linuxproc``), a process whose parent is gone escapes the job's kill,
    and a head or engine left behind would hold its ports and GPUs."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn_engine(command: str, env: dict[str, str]) -> subprocess.Popen:
    """The engine in its own process group, so stopping it stops everything it started."""
    return subprocess.Popen(["bash", "-c", command], env=env, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="madinfra-ray-head")
    parser.add_argument("--node-ip", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dashboard-port", type=int, required=True)
    parser.add_argument("--num-gpus", type=int, required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--topology", required=True)
    parser.add_argument("--poll", type=float, default=2.0)
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("engine")
    return parser.parse_args(argv)


STARTED_LINE = "will now block forever"
"""What ``ray start --block`` prints once the head runs (Ray 2.x); a head that is still alive
``SETTLE_SECONDS`` after its GCS port answers counts as started too, whatever Ray prints."""
SETTLE_SECONDS = 5


class Head:
    """``ray start --head --block``, its output passed through to the job's, started again
    while the port is still held by a head that is shutting down (a replaced head job's GCS
    can outlive its job by a few seconds)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.process: subprocess.Popen | None = None
        self.started = threading.Event()

    def start(self) -> None:
        args = self.args
        self.started.clear()
        self.process = subprocess.Popen(
            [
                "ray", "start", "--head", "--block", "--disable-usage-stats",
                f"--port={args.port}", f"--node-ip-address={args.node_ip}", f"--num-gpus={args.num_gpus}",
                f"--dashboard-host={args.node_ip}", f"--dashboard-port={args.dashboard_port}",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            preexec_fn=die_with_parent,
        )
        threading.Thread(target=self._relay, args=(self.process,), daemon=True).start()

    def _relay(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if STARTED_LINE in line:
                self.started.set()

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait_started(self, deadline: float) -> bool:
        """Start the head, and again after it exits, until it runs or ``deadline`` passes."""
        answered_at: float | None = None
        self.start()
        while time.time() < deadline:
            if self.started.is_set():
                return True
            if self.exited() is not None:
                log(f"`ray start --head` exited with code {self.exited()}; starting it again in 2 s")
                time.sleep(2)
                answered_at = None
                self.start()
                continue
            if port_answers(self.args.node_ip, self.args.port):
                answered_at = answered_at or time.time()
                if time.time() - answered_at >= SETTLE_SECONDS:
                    return True
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    die_with_parent()
    try:
        import ray
    except ImportError:
        log(f"{sys.executable} has no `ray` module; run the stack in an image with vLLM and Ray, or put a Python with Ray first on PATH")
        return 1
    os.makedirs(os.path.dirname(args.status) or ".", exist_ok=True)
    try:
        os.remove(args.status)
    except FileNotFoundError:
        pass
    head = Head(args)
    supervisor: Supervisor | None = None

    def finish(signum: int, _frame: Any) -> None:
        log(f"signal {signum}: stopping the engine and the Ray head")
        if supervisor is not None:
            supervisor.stop_engine()
        head.stop()
        try:
            os.remove(args.status)
        except OSError:
            pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    address = f"{args.node_ip}:{args.port}"
    if not head.wait_started(time.time() + args.connect_timeout):
        log(f"the Ray head did not start at {address} in {args.connect_timeout:.0f} s")
        head.stop()
        return 1
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except Exception as exc:  # the GCS went away between starting and connecting
        log(f"cannot connect to the GCS at {address}: {exc}")
        head.stop()
        return 1
    log(f"the Ray head is up at {address} (dashboard http://{args.node_ip}:{args.dashboard_port})")
    supervisor = Supervisor(args, lambda: sum(1 for node in ray.nodes() if node.get("Alive")), spawn_engine)
    while True:
        if head.exited() is not None:
            log(f"the Ray head process exited with code {head.exited()}; stopping the engine")
            supervisor.stop_engine()
            return 1
        write_status(args.status, supervisor.step())
        time.sleep(args.poll)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
