"""Files in the stack's remote directory that are resources of their own (``slurm/File``).

- ``topology.env``: the stack's shape (``LaunchPlan.topology_env``: pool sizes, first ranks),
  sourced by every task. A file, not part of any job script, so resizing one pool rewrites it in
  place and leaves the other pools' scripts (and jobs) alone.
- ``endpoints/<pool>`` (disaggregated SGLang): one URL per healthy replica of the pool, in
  replica order; the proxy reads them and restarts its router when they change, so a resize never
  resubmits it. Which host a replica gets is known only once it runs, so the spec says what the
  file must match instead: the port, the number of replicas and ``replica_jobs``, a digest of the
  replica jobs' specs as far as a change to them resubmits a job. A sidecar
  ``endpoints/<pool>.source`` records the replica and job id behind each line
  (``replica.<i>=<job id>``, in the file's order) and, once apply has finished the pool,
  ``replica_jobs``; a file whose replicas or job ids are not exactly the pool's live replica jobs
  reads without ``replica_jobs``, so the plan rewrites it. While apply drains, rolls or adds
  replicas it writes the file without ``replica_jobs`` (``pools.py``).

Every field of a file changes in place (apply rewrites it). Pure; apply lives in the provider.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable
from urllib.parse import urlsplit

from madinfra.resources import Resource, UpdateRules
from madinfra_slurm import rules, scripts

FILE_KIND = "slurm/File"
FILE_RULES = UpdateRules(server_owned=(rules.SUBMIT_KEY,))
TOPOLOGY_NAME = scripts.TOPOLOGY_FILE
SOURCE_SUFFIX = ".source"
POOL_JOB_IGNORES = frozenset(rules.ALWAYS_UPDATABLE) | {rules.SUBMIT_KEY}
"""Job fields left out of ``pool_job``: they change in place and never move the job's hosts."""


def endpoints_name(pool: str) -> str:
    return f"{scripts.ENDPOINTS_DIR}/{pool}"


def topology_resource(stack: str, remote_dir: str, variables: dict[str, str]) -> Resource:
    submit = {"stack": stack, "remote_dir": remote_dir, "file": TOPOLOGY_NAME, "text": scripts.topology_text(variables)}
    return Resource(FILE_KIND, TOPOLOGY_NAME, {"variables": dict(variables), rules.SUBMIT_KEY: submit})


def pool_job_digest(job_spec: dict[str, Any]) -> str:
    """Digest of the job fields whose change resubmits a running job (its host may move)."""
    kept = {key: value for key, value in job_spec.items() if key not in POOL_JOB_IGNORES and value is not None}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def replica_jobs_digest(replicas: list[Resource]) -> str:
    """Digest of a pool's replica jobs (``pool_job_digest`` of each, in replica order)."""
    text = ",".join(pool_job_digest(job.spec) for job in replicas)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def endpoints_resource(stack: str, remote_dir: str, pool: str, replicas: list[Resource], port: int, *, proxy_ack: bool) -> Resource:
    """The endpoint file of a pool, written once its replicas run (it depends on them).

    ``proxy_ack``: the proxy is madinfra's own supervisor, which acknowledges the lists it runs
    with (``endpoints/.proxy-seen``), so apply waits for it before cancelling a drained replica;
    a proxy of the user's own (``roles.proxy.command``) gives no acknowledgement, and the file
    write is the drain point."""
    submit = {
        "stack": stack,
        "remote_dir": remote_dir,
        "file": endpoints_name(pool),
        "pool": pool,
        "job_names": [job.spec["name"] for job in replicas],
        "proxy_ack": proxy_ack,
    }
    spec = {"port": port, "replicas": len(replicas), "replica_jobs": replica_jobs_digest(replicas), rules.SUBMIT_KEY: submit}
    return Resource(FILE_KIND, endpoints_name(pool), spec, depends_on=tuple(job.id for job in replicas))


def source_text(jobs: dict[int, str], replica_jobs: str | None) -> str:
    """The ``.source`` sidecar: the replica and job behind each line of the endpoint file, and
    ``replica_jobs`` only when the file is the pool's finished state."""
    lines = [f"replica.{index}={jobs[index]}" for index in sorted(jobs)]
    if replica_jobs is not None:
        lines.append(f"replica_jobs={replica_jobs}")
    return "".join(line + "\n" for line in lines)


def source_jobs(text: str) -> dict[int, str]:
    """``{replica: job id}`` from a ``.source`` sidecar (lines that are not ``replica.<i>=`` ignored)."""
    jobs = {}
    for key, value in _pairs(text).items():
        head, _, index = key.partition(".")
        if head == "replica" and index.isdigit():
            jobs[int(index)] = value
    return jobs


def _pairs(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            values[key] = value
    return values


def endpoint_urls(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _port(urls: list[str]) -> int | None:
    try:
        return urlsplit(urls[0]).port if urls else None
    except ValueError:
        return None


def live_files(files: Iterable[tuple[str, str]], directory: str | None, pool_jobs: dict[str, dict[int, str]]) -> list[Resource]:
    """The ``slurm/File`` resources a live read found.

    ``files`` are ``(path relative to the stack dir, text)``; ``directory`` is the stack dir as
    the remote shell resolved it (recorded in status so delete knows the absolute path);
    ``pool_jobs`` maps a pool to ``{replica: job id}`` of its live replica jobs.
    """
    by_path = dict(files)
    found = []
    for path, text in sorted(by_path.items()):
        status = {"path": f"{directory}/{path}"} if directory else {}
        if path == TOPOLOGY_NAME:
            found.append(Resource(FILE_KIND, TOPOLOGY_NAME, {"variables": scripts.parse_topology(text)}, status=status))
            continue
        head, _, pool = path.partition("/")
        if head != scripts.ENDPOINTS_DIR or not pool or "." in pool or "/" in pool:
            continue
        urls = endpoint_urls(text)
        source_text_ = by_path.get(path + SOURCE_SUFFIX, "")
        written_for = source_jobs(source_text_)
        current = bool(written_for) and written_for == pool_jobs.get(pool, {}) and len(written_for) == len(urls)
        spec = {"port": _port(urls), "replicas": len(urls), "replica_jobs": _pairs(source_text_).get("replica_jobs") if current else None}
        status = {**status, "urls": urls, "written_for": {str(k): v for k, v in sorted(written_for.items())}}
        found.append(Resource(FILE_KIND, path, spec, status=status))
    return found
