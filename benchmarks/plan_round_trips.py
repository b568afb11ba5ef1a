"""Remote round trips per `plan` as the stack grows (target: constant in the number of nodes).

SLURM: the real SlurmProvider against the sandbox (scripts/slurm-sandbox, target file
/tmp/madinfra-slurm-sandbox/target.json). Every command it runs over SSH and every SFTP transfer
is counted by wrapping its connection's ``run``/``write_text``/``put_file``. Plan only reads
``squeue``, so stacks larger than the sandbox's 3 nodes can be planned too.

Kubernetes: the real KubernetesProvider against a fake API server on 127.0.0.1 (a small HTTP
server that serves the stack's own objects and counts requests), through the real kubernetes
client. Target: one list call per kind.

A part whose provider or cluster is not available is skipped with a note.

Run: python benchmarks/plan_round_trips.py
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

from _common import SANDBOX_TARGET, header, ms, stack_dict, table

SLURM_NODES = (1, 2, 3, 10, 100, 1000)
K8S_NODES = (1, 10, 100, 1000)
LAUNCHERS = ("torchrun", "sglang-disagg")


def plan_once(spec: Any, provider: Any) -> Any:
    from madinfra.engine.pipeline import compute_plan

    return compute_plan(spec, provider, None)


# -- SLURM -------------------------------------------------------------------------------------


@contextlib.contextmanager
def counting_ssh() -> Iterator[Counter]:
    """Count every remote operation of every SlurmConnection: ``run`` by the command's first
    word, SFTP writes and uploads, and connections opened."""
    from providers.slurm.connection import SlurmConnection

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
        from providers.slurm import SlurmProvider
    except Exception as exc:  # noqa: BLE001 - a provider under construction is reported, not fatal
        print(f"Skipped: providers.slurm cannot be imported yet ({exc.__class__.__name__}: {exc}).")
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


# -- Kubernetes --------------------------------------------------------------------------------

PLURAL_KINDS = {
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "services": "Service",
    "jobs": "Job",
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "pods": "Pod",
}


class FakeApi:
    """A loopback HTTP server answering the kubernetes client's list and namespace calls from a
    set of stored objects, counting requests by (method, kind). Selectors are not evaluated: the
    provider checks labels itself, and only one stack is stored."""

    def __init__(self, objects: list[dict[str, Any]], namespace: str):
        self.objects = objects
        self.namespace = namespace
        self.requests: Counter = Counter()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0].rstrip("/")
                parts = path.split("/")
                if parts[-2:] == ["namespaces", fake.namespace]:
                    fake.requests[("GET", "Namespace")] += 1
                    self._send({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": fake.namespace}})
                    return
                kind = PLURAL_KINDS.get(parts[-1])
                if kind is None:
                    fake.requests[("GET", path)] += 1
                    self._send({"kind": "Status", "status": "Failure", "code": 404}, 404)
                    return
                fake.requests[("LIST", kind)] += 1
                items = [o for o in fake.objects if o["kind"] == kind]
                self._send({"apiVersion": "v1", "kind": f"{kind}List", "metadata": {"resourceVersion": "1"}, "items": items})

            def _send(self, body: dict[str, Any], status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeApi":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def stored(manifest: dict[str, Any], index: int) -> dict[str, Any]:
    """A manifest as the API server returns it: a uid, a resource version, a status."""
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(uid=f"uid-{index}", resourceVersion="1", generation=1)
    obj["status"] = {}
    return obj


def write_kubeconfig(directory: Path, url: str) -> Path:
    import yaml

    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
        "current-context": "fake",
    }))
    return path


def k8s_part() -> None:
    print("\n## Kubernetes (fake API server on 127.0.0.1, real kubernetes client)\n")
    try:
        import kubernetes  # noqa: F401 - only to say clearly when it is missing

        from providers.kubernetes import KubernetesProvider
    except Exception as exc:  # noqa: BLE001
        print(f"Skipped: the Kubernetes provider or client cannot be imported ({exc.__class__.__name__}: {exc}).")
        return
    from madinfra.config import resolve
    from madinfra.launchers import compile as compile_launch
    from madinfra.resources import ProviderOptions

    rows = []
    cold = None
    with tempfile.TemporaryDirectory(prefix="madinfra-bench-") as tmp:
        for launcher in LAUNCHERS:
            for nnodes in K8S_NODES:
                nnodes = max(nnodes, 3) if launcher == "sglang-disagg" else nnodes
                spec = resolve(stack_dict("k8s", launcher, nnodes))
                desired = KubernetesProvider(ProviderOptions()).desired(spec, compile_launch(spec))
                objects = [stored(r.spec, i) for i, r in enumerate(desired)]
                with FakeApi(objects, spec.k8s.namespace) as api:
                    options = ProviderOptions(kubeconfig=str(write_kubeconfig(Path(tmp), api.url)))
                    if cold is None:  # the first plan also imports the kubernetes client: timed apart
                        start = time.perf_counter()
                        plan_once(spec, KubernetesProvider(options))
                        cold = time.perf_counter() - start
                        api.requests.clear()
                    provider = KubernetesProvider(options)
                    start = time.perf_counter()
                    result = plan_once(spec, provider)
                    elapsed = time.perf_counter() - start
                    provider.close()
                lists = {kind: n for (method, kind), n in api.requests.items() if method == "LIST"}
                other = sum(n for (method, _), n in api.requests.items() if method != "LIST")
                rows.append([launcher, nnodes, len(desired), sum(api.requests.values()), sum(lists.values()), len(lists),
                             max(lists.values()) if lists else 0, other, len(result.changes), ms(elapsed)])
    print("One `plan` per row; the fake cluster already holds exactly the stack's objects.")
    print(f"The very first plan, which also imports the kubernetes client, took {ms(cold or 0):.0f} ms and is not in the table.\n")
    print(table(["launcher", "nnodes", "objects", "API requests", "list calls", "kinds listed", "lists per kind (max)", "other requests", "planned changes", "plan wall ms"], rows))
    totals = {row[3] for row in rows}
    per_kind = {row[6] for row in rows}
    verdict = "constant" if len(totals) == 1 and per_kind == {1} else "NOT constant"
    print(f"\nAPI requests per plan: {sorted(totals)}, at most {max(per_kind)} list call(s) per kind -> {verdict} in the number of nodes.")


def main() -> None:
    header("Remote round trips per plan")
    slurm_part()
    k8s_part()


if __name__ == "__main__":
    main()
