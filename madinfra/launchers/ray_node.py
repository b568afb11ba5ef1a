"""The program a Ray cluster's nodes run: the head (with the engine on top) or a worker.

It is not imported by madinfra's own code paths: ``ray_cluster`` embeds this file's text in both
jobs' scripts, and ``python3 - head|worker ...`` runs it on the node (standard library plus
``ray``, which every vLLM image has). It exists so that the Ray head outlives its workers:

- ``head``: ``ray start --head --block`` runs as a child for the whole job: the GCS (``--port``)
  and the dashboard stay up whatever happens to the workers or the engine. Once the GCS
  answers, the status file says so (``gcs=up``, the address, the dashboard, the head's job id),
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
- ``worker``: joins the head the status file names (``ray start --address --block``), and
  joins again when it is dropped; it leaves at once when its head's status file goes (the head
  stopped) or names a new head job (Ray itself would take a minute to give up on the old GCS,
  and until then a raylet of the old cluster on the new head's node stops the new head from
  starting there).
- SIGTERM (scancel) stops the engine and every process Ray started, not only ``ray start``:
  where Slurm tracks a job's processes by parentage (``proctrack/linuxproc``), a GCS or raylet
  whose parent exited first escapes the job's kill and keeps its ports, and the next head on
  that node could not start.
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


WHO = {"name": "ray-head"}
"""Who speaks in the log lines: ``ray-head`` or ``ray-workers`` (set by ``main``)."""


def log(message: str) -> None:
    """A line in the job's output; a closed output (the job is ending) is not an error."""
    try:
        print(f"madinfra {WHO['name']}: {message}", flush=True)
    except (OSError, ValueError):
        pass


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

    def stop_engine(self, grace: float = STOP_GRACE_SECONDS) -> None:
        engine, self.engine = self.engine, None
        if engine is None or engine.poll() is not None:
            return
        try:
            os.killpg(engine.pid, signal.SIGTERM)
            engine.wait(timeout=grace)
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


STARTED_LINE = "will now block forever"
"""What ``ray start --block`` prints once its node runs (Ray 2.x); a head that is still alive
``SETTLE_SECONDS`` after its GCS port answers counts as started too, whatever Ray prints."""
SETTLE_SECONDS = 5
STAGGER_SLOTS = 8
"""A worker job's task i waits ``(i mod 8) x --stagger`` seconds before each join."""
TREE_GRACE_SECONDS = 3
"""How long the engine and Ray's processes, stopped together, get to exit after SIGTERM before
SIGKILL: less than Slurm's KillWait (5 s in the sandbox, 30 s by default), so they are gone before
Slurm kills this program (a GCS on SIGTERM can take half a minute)."""


def parent_map() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in parent_map().items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_tree(pids: set[int], grace: float = TREE_GRACE_SECONDS) -> None:
    """SIGTERM every process, SIGKILL what is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + grace
        while sig == signal.SIGTERM and time.time() < deadline and any(alive(pid) for pid in pids):
            time.sleep(0.1)
        pids = {pid for pid in pids if alive(pid)}
        if not pids:
            return


class RayProcess:
    """``ray start ... --block`` as a child: its output passed through to the job's, and every
    process it started remembered (``remember``), so ``stop`` ends them all even once some were
    re-parented."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.argv = argv
        self.env = env
        self.process: subprocess.Popen | None = None
        self.started = threading.Event()
        self.tree: set[int] = set()

    def start(self) -> None:
        self.started.clear()
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", preexec_fn=die_with_parent,
        )
        self.tree.add(self.process.pid)
        threading.Thread(target=self._relay, args=(self.process,), daemon=True).start()

    def _relay(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            if STARTED_LINE in line:
                self.started.set()

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def remember(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.tree |= descendants(self.process.pid)

    def stop(self) -> None:
        self.remember()
        kill_tree({pid for pid in self.tree if alive(pid)})
        if self.process is not None:
            try:
                self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self.tree.clear()


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def start_head(args: argparse.Namespace, head: RayProcess, deadline: float) -> bool:
    """Start the head, and again after it exits (a replaced head's GCS may still hold the port
    for a moment), until it runs or ``deadline`` passes."""
    answered_at: float | None = None
    head.start()
    while time.time() < deadline:
        head.remember()
        if head.started.is_set():
            return True
        if head.exited() is not None:
            log(f"`ray start --head` exited with code {head.exited()}; starting it again in 2 s")
            head.stop()
            time.sleep(2)
            answered_at = None
            head.start()
            continue
        if port_answers(args.node_ip, args.port):
            answered_at = answered_at or time.time()
            if time.time() - answered_at >= SETTLE_SECONDS:
                return True
        time.sleep(0.5)
    return False


def status_fields(text: str) -> dict[str, str]:
    """A status file's ``key=value`` lines (``status_text``) as a dict; the SLURM provider reads
    the file with this too."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def read_status(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return status_fields(handle.read())
    except OSError:
        return {}


def remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def on_term(stop: Callable[[], None]) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log(f"signal {signum}: stopping")
        stop()
        # At once: Ray's exit hooks would wait for the GCS that was just stopped.
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os._exit(0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def head_main(args: argparse.Namespace) -> int:
    try:
        import ray
    except ImportError:
        log(f"{sys.executable} has no `ray` module; run the stack in an image with vLLM and Ray, or put a Python with Ray first on PATH")
        return 1
    os.makedirs(os.path.dirname(args.status) or ".", exist_ok=True)
    remove(args.status)
    head = RayProcess([
        "ray", "start", "--head", "--block", "--disable-usage-stats",
        f"--port={args.port}", f"--node-ip-address={args.node_ip}", f"--num-gpus={args.num_gpus}",
        f"--dashboard-host={args.node_ip}", f"--dashboard-port={args.dashboard_port}",
    ])
    supervisor = Supervisor(args, lambda: sum(1 for node in ray.nodes() if node.get("Alive")), spawn_engine)

    def stop() -> None:
        # The engine and the whole Ray tree at once, within one grace period.
        engine, supervisor.engine = supervisor.engine, None
        head.remember()
        tree = {pid for pid in head.tree if alive(pid)}
        if engine is not None:
            tree |= {engine.pid} | descendants(engine.pid)
        kill_tree(tree)
        if engine is not None:
            try:
                os.killpg(engine.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        remove(args.status)

    on_term(stop)
    address = f"{args.node_ip}:{args.port}"
    if not start_head(args, head, time.time() + args.connect_timeout):
        log(f"the Ray head did not start at {address} in {args.connect_timeout:.0f} s")
        head.stop()
        return 1
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except Exception as exc:  # the GCS went away between starting and connecting
        log(f"cannot connect to the GCS at {address}: {exc}")
        head.stop()
        return 1
    # ray.init installs its own SIGTERM handler in this driver, which would only exit and leave
    # a GCS that takes half a minute to stop on its own: ours again.
    on_term(stop)
    log(f"the Ray head is up at {address} (dashboard http://{args.node_ip}:{args.dashboard_port})")
    while True:
        head.remember()
        if head.exited() is not None:
            log(f"the Ray head process exited with code {head.exited()}; stopping the engine")
            stop()
            return 1
        write_status(args.status, supervisor.step())
        time.sleep(args.poll)


def worker_main(args: argparse.Namespace) -> int:
    """Join the head in the status file; again when dropped, at once for a new head job."""
    node: RayProcess | None = None
    on_term(lambda: node.stop() if node is not None else None)
    waited = False
    while True:
        status = read_status(args.status)
        address, job = status.get("address", ""), status.get("job", "")
        if address:
            stagger = (int(os.environ.get("SLURM_PROCID", "0") or 0) % STAGGER_SLOTS) * args.stagger
            if stagger:
                # Raylets that start in the same instant can pick the same free port where they
                # share a host (a test cluster, or non-exclusive jobs): one then fails after 30 s.
                time.sleep(stagger)
            log(f"joining the Ray head at {address} (job {job})")
            env = dict(os.environ, MASTER_ADDR=address.rsplit(":", 1)[0])
            node = RayProcess([
                "ray", "start", "--block", "--disable-usage-stats", f"--num-gpus={args.num_gpus}",
                f"--address={address}", f"--node-ip-address={args.node_ip}",
            ], env)
            node.start()
            while node.exited() is None:
                time.sleep(args.poll)
                node.remember()
                now = read_status(args.status).get("job", "")
                if now != job:
                    # Leave with the head: a raylet of the old cluster on the new head's node
                    # would make `ray start --head` there refuse to start.
                    log(f"a new Ray head (job {now}) replaced job {job}; joining it" if now else f"the Ray head (job {job}) is gone; leaving its cluster")
                    break
            node.stop()
            log(f"not in the Ray cluster at {address}; joining again in {args.rejoin:g} s")
        elif not waited:
            log(f"waiting for the Ray head to write its address to {args.status}")
            waited = True
        time.sleep(args.rejoin)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="madinfra-ray-node")
    modes = parser.add_subparsers(dest="mode", required=True)
    head = modes.add_parser("head")
    worker = modes.add_parser("worker")
    for mode in (head, worker):
        mode.add_argument("--node-ip", required=True)
        mode.add_argument("--num-gpus", type=int, required=True)
        mode.add_argument("--status", required=True)
        mode.add_argument("--poll", type=float, default=2.0)
    head.add_argument("--port", type=int, required=True)
    head.add_argument("--dashboard-port", type=int, required=True)
    head.add_argument("--topology", required=True)
    head.add_argument("--connect-timeout", type=float, default=120.0)
    head.add_argument("engine")
    worker.add_argument("--rejoin", type=float, default=5.0)
    worker.add_argument("--stagger", type=float, default=1.5, help="seconds between the joins of one job's nodes")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    die_with_parent()
    if args.mode == "worker":
        WHO["name"] = "ray-workers"
        return worker_main(args)
    return head_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
