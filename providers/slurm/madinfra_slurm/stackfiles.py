"""Files in the stack's remote directory that are resources of their own (``slurm/File``).

- ``topology.env``: the stack's shape (``LaunchPlan.topology_env``: pool sizes, first ranks),
  sourced by every task. A file, not part of any job script, so resizing one pool rewrites it in
  place and leaves the other pools' scripts (and jobs) alone.
- ``endpoints/<pool>`` (disaggregated SGLang): one URL per node of the pool's running job; the
  proxy reads them and restarts its router when they change, so a resize never resubmits it.
  Which hosts a job gets is known only once it runs, so the spec says what the file must match
  instead: the port, the number of nodes and ``pool_job``, a digest of the pool job's spec as
  far as a change to it resubmits the job. A sidecar ``endpoints/<pool>.source`` records which
  job and ``pool_job`` the file was written for; a file written for another job than the pool's
  live one reads without ``pool_job``, so the plan rewrites it.

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
    """Digest of the job fields whose change resubmits a running pool (its hosts may move)."""
    kept = {key: value for key, value in job_spec.items() if key not in POOL_JOB_IGNORES and value is not None}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def endpoints_resource(stack: str, remote_dir: str, pool_job: Resource, port: int) -> Resource:
    """The endpoint file of a pool, written once ``pool_job`` runs (it depends on the job)."""
    pool = pool_job.name
    submit = {"stack": stack, "remote_dir": remote_dir, "file": endpoints_name(pool), "pool": pool, "job_name": pool_job.spec["name"]}
    spec = {"port": port, "nodes": pool_job.spec["nodes"], "pool_job": pool_job_digest(pool_job.spec), rules.SUBMIT_KEY: submit}
    return Resource(FILE_KIND, endpoints_name(pool), spec, depends_on=(pool_job.id,))


def source_text(job_id: str, pool_job: str) -> str:
    return f"job={job_id}\npool_job={pool_job}\n"


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


def live_files(files: Iterable[tuple[str, str]], directory: str | None, pool_jobs: dict[str, str]) -> list[Resource]:
    """The ``slurm/File`` resources a live read found.

    ``files`` are ``(path relative to the stack dir, text)``; ``directory`` is the stack dir as
    the remote shell resolved it (recorded in status so delete knows the absolute path);
    ``pool_jobs`` maps a pool to the job id of its live job.
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
        source = _pairs(by_path.get(path + SOURCE_SUFFIX, ""))
        current = source.get("job") is not None and source.get("job") == pool_jobs.get(pool)
        spec = {"port": _port(urls), "nodes": len(urls), "pool_job": source.get("pool_job") if current else None}
        status = {**status, "urls": urls, "written_for_job": source.get("job")}
        found.append(Resource(FILE_KIND, path, spec, status=status))
    return found
