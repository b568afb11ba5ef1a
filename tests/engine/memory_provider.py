"""An in-memory provider implementing the Provider protocol, for engine, planner and CLI tests.

Its "cluster" is a dict, optionally mirrored to a JSON file so several processes (lock contention,
an apply killed with SIGKILL) share it. Resources look like small Kubernetes objects
(``metadata.labels`` carry the stack, ``spec`` the settings) and reads come back the way real
clusters return them: server-owned fields filled in, env lists reordered, ``None`` for unset keys.

Knobs (keys of the store): ``fail`` {resource id: message} fails any change of that resource,
``sleep`` {resource id: seconds} sleeps before changing it, ``auto_running`` marks created
workloads RUNNING, ``calls`` logs every operation (read/create/update/delete), ``logs`` holds
the processes' output lines for ``madinfra logs`` (``[role, rank, time, text]``).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from madinfra.sequential import apply_sequentially
from madinfra.resources import Change, ProviderOptions, Resource, UpdateRules
from madinfra.secrets import resolve_secret, secret_digest

STACK_LABEL = "madinfra.io/stack"

RULES = {
    "mem_job": UpdateRules(
        force_replace=("spec.partition",),
        server_owned=("metadata.uid", "metadata.generation"),
        replace_when_running=("spec.nodes",),
        unordered_lists=("spec.tags",),
    ),
    "mem_service": UpdateRules(force_replace=("spec.cluster_ip",), server_owned=("metadata.uid", "metadata.generation")),
}
DEFAULT_RULES = UpdateRules(server_owned=("metadata.uid", "metadata.generation"))


def res(kind: str, name: str, stack: str = "demo", *, depends_on: tuple[str, ...] = (), gpus: int = 0, workload: bool = False, **spec: Any) -> Resource:
    """A resource of ``stack`` shaped like the ones this provider stores."""
    return Resource(
        kind=kind,
        name=name,
        spec={"metadata": {"labels": {STACK_LABEL: stack}}, "spec": spec},
        depends_on=depends_on,
        gpus=gpus,
        workload=workload,
    )


class MemoryStore:
    """The fake cluster; with ``path`` every write is mirrored to that JSON file atomically."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else None
        self.data: dict[str, Any] = {"resources": {}, "counter": 0, "fail": {}, "sleep": {}, "auto_running": False, "calls": []}
        if self.path is not None and self.path.exists():
            self.reload()
        else:
            self.save()

    def reload(self) -> None:
        if self.path is not None:
            self.data = json.loads(self.path.read_text())

    def save(self) -> None:
        if self.path is None:
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".store.")
        with os.fdopen(fd, "w") as handle:
            json.dump(self.data, handle)
        os.replace(tmp, self.path)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.data["resources"]

    def set(self, key: str, value: Any) -> None:
        self.reload()
        self.data[key] = value
        self.save()

    def set_status(self, rid: str, status: dict[str, Any]) -> None:
        self.reload()
        self.resources[rid]["status"] = status
        self.save()

    def edit_spec(self, rid: str, path: str, value: Any) -> None:
        """Change a live resource behind madinfra's back (drift)."""
        self.reload()
        node = self.resources[rid]["spec"]
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        self.save()

    def remove(self, rid: str) -> None:
        self.reload()
        del self.resources[rid]
        self.save()


class MemoryProvider:
    """The Provider protocol over a :class:`MemoryStore`."""

    name = "memory"

    def __init__(self, options: ProviderOptions | None = None, store: MemoryStore | None = None):
        self.options = options or ProviderOptions()
        self.store = store or MemoryStore()
        self.closed = False

    # -- pure ---------------------------------------------------------------------------------
    def desired(self, spec: Any, launch: Any) -> list[Resource]:
        """Volume <- job <- service, plus one config per name in env MEM_EXTRA (comma-separated)."""
        stack = spec.name
        env = dict(spec.env_vars)
        slurm = spec.slurm
        volume = res("mem_volume", f"{stack}-data", stack, size=env.get("MEM_VOLUME_SIZE", "10Gi"))
        job = res(
            "mem_job",
            stack,
            stack,
            depends_on=(volume.id,),
            gpus=slurm.nodes * slurm.gpus_per_node,
            workload=True,
            partition=slurm.partition,
            nodes=slurm.nodes,
            time=slurm.time,
            env=[{"name": k, "value": v} for k, v in sorted(env.items())],
            secret_env={k: secret_digest(k, resolve_secret(src, k)) for k, src in spec.secret_env.items()},
        )
        job.role = "worker"
        port = spec.service.port if spec.service and spec.service.port else 8000
        service = res("mem_service", f"{stack}-svc", stack, depends_on=(job.id,), port=port)
        extras = [res("mem_config", f"{stack}-{n.strip()}", stack, value=n.strip()) for n in env.get("MEM_EXTRA", "").split(",") if n.strip()]
        return [volume, job, service, *extras]

    def update_rules(self, kind: str) -> UpdateRules:
        return RULES.get(kind, DEFAULT_RULES)

    def render_files(self, resources: list[Resource]) -> dict[str, str]:
        return {f"{r.kind}-{r.name}.json": json.dumps(r.spec, indent=2, sort_keys=True) for r in resources}

    # -- cluster ------------------------------------------------------------------------------
    def read(self, stack: str) -> list[Resource]:
        self.store.reload()
        self._log("read", stack)
        out = []
        for _, item in sorted(self.store.resources.items()):
            if item["spec"].get("metadata", {}).get("labels", {}).get(STACK_LABEL) != stack:
                continue
            out.append(self._as_live(item))
        return out

    def apply(self, changes: list[Change], progress: Any, record: Any) -> None:
        apply_sequentially(changes, self._create, self._update, self._delete, progress, record)

    def outputs(self, spec: Any, live: list[Resource]) -> dict[str, str]:
        for resource in live:
            if resource.kind == "mem_service":
                return {"endpoint": f"http://{resource.name}.memory:{resource.spec['spec']['port']}/v1"}
        return {}

    def logs(self, spec: Any, desired: list[Resource], query: Any) -> Any:
        """The store's ``logs`` (``[role, rank, time, text]`` in the order written) as the
        contract (``madinfra.logs``) asks: per (role, rank) ``select``, then merged."""
        from madinfra.logs import LogLine, merge, select

        self.store.reload()
        self._log("logs", spec.name)
        streams: dict[tuple[str, int], list[LogLine]] = {}
        for role, rank, when, text in self.store.data.get("logs", []):
            if query.wants(role, rank):
                streams.setdefault((role, rank), []).append(LogLine(role, rank, text, when))
        return merge(select(streams[key], query) for key in sorted(streams))

    def close(self) -> None:
        self.closed = True

    # -- operations used by apply_sequentially ----------------------------------------------
    def _before(self, op: str, rid: str) -> None:
        self.store.reload()
        delay = self.store.data["sleep"].get(rid)
        if delay:
            self.store.data["in_flight"] = [op, rid]  # tests interrupt an apply in this sleep
            self.store.save()
            time.sleep(delay)
            self.store.reload()
        message = self.store.data["fail"].get(rid)
        if message:
            raise RuntimeError(message)
        self._log(op, rid)

    def _create(self, resource: Resource) -> Resource:
        self._before("create", resource.id)
        self.store.data["counter"] += 1
        provider_id = f"mem-{self.store.data['counter']}"
        running = self.store.data.get("auto_running") and resource.workload
        self.store.resources[resource.id] = {
            "kind": resource.kind,
            "name": resource.name,
            "spec": copy.deepcopy(resource.spec),
            "depends_on": list(resource.depends_on),
            "gpus": resource.gpus,
            "workload": resource.workload,
            "role": resource.role,
            "provider_id": provider_id,
            "status": {"state": "RUNNING" if running else "PENDING"},
            "generation": 1,
        }
        self.store.save()
        return self._as_live(self.store.resources[resource.id])

    def _update(self, change: Change) -> Resource:
        assert change.desired is not None
        self._before("update", change.resource_id)
        item = self.store.resources[change.resource_id]
        item["spec"] = copy.deepcopy(change.desired.spec)
        item["gpus"] = change.desired.gpus
        item["generation"] += 1
        self.store.save()
        return self._as_live(item)

    def _delete(self, resource: Resource) -> None:
        self._before("delete", resource.id)
        self.store.resources.pop(resource.id, None)
        self.store.save()

    def _as_live(self, item: dict[str, Any]) -> Resource:
        """What a real API returns: server-owned fields, env in another order, ``None`` for unset."""
        spec = copy.deepcopy(item["spec"])
        spec.setdefault("metadata", {})["uid"] = item["provider_id"]
        spec["metadata"]["generation"] = item["generation"]
        body = spec.setdefault("spec", {})
        if isinstance(body.get("env"), list):
            body["env"] = list(reversed(body["env"]))
        body.setdefault("comment", None)
        return Resource(
            kind=item["kind"],
            name=item["name"],
            spec=spec,
            depends_on=tuple(item["depends_on"]),
            gpus=item["gpus"],
            workload=item["workload"],
            role=item.get("role"),
            provider_id=item["provider_id"],
            status=dict(item["status"]),
        )

    def _log(self, op: str, what: str) -> None:
        self.store.data["calls"].append([op, what])
        self.store.save()


def install(store_path: Path | str | None = None, name: str = "slurm") -> MemoryStore:
    """Register the memory provider under a target name (``slurm`` for stack files with a
    ``slurm:`` section) over one shared store (a file when ``store_path`` is given)."""
    from madinfra.provider_registry import register

    store = MemoryStore(store_path)

    def factory(options: ProviderOptions | None = None) -> MemoryProvider:
        return MemoryProvider(options, MemoryStore(store_path) if store_path is not None else store)

    register(name, factory)
    return store


def fake_compile(spec: Any) -> dict[str, Any]:
    """Stand-in for madinfra.launchers.compile: the memory provider derives everything from the spec."""
    return {"stack": spec.name}


def main(argv: list[str]) -> None:
    """``python memory_provider.py STORE_FILE ARGS...``: run the madinfra CLI against the memory
    provider in a separate process (lock contention and SIGKILL tests)."""
    import madinfra.launchers as launchers
    from madinfra.cli import main as cli_main

    install(argv[0])
    launchers.compile = fake_compile  # type: ignore[attr-defined]
    cli_main(argv[1:])


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
