"""Fast unit tests of ``madinfra logs`` on Kubernetes (logs.py, log_follow.py) with a fake API.

The fake answers the pod log API the way the kubelet does (``timestamps``, ``tailLines``,
``sinceTime`` in whole seconds, ``follow`` streaming appended lines until closed), so what is
tested here is madinfra's side: which pods are which rank, the merge, tail/since per rank stream,
where a followed pod is read again from, and when following ends. The real API server -> KWOK
path is tested in test_k8s_e2e_logs.py.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest

from madinfra.config import resolve
from madinfra.errors import ProviderError
from madinfra.launchers import compile
from madinfra.logs import LogLine, LogQuery
from madinfra.naming import MANAGED_BY_LABEL, ROLE_LABEL, STACK_LABEL
from madinfra.resources import ProviderOptions
from madinfra_kubernetes import KubernetesProvider
from madinfra_kubernetes.apiserver import ApiError
from madinfra_kubernetes.log_follow import Cursor, Dedupe, follow
from madinfra_kubernetes.logs import RoleSource, Timed, assign_ranks, container_state, parse_line, parse_timestamp, read_logs, since_time

pytestmark = pytest.mark.k8s

T0 = 1_795_827_600  # 2026-11-28T01:00:00Z
NS = 1_000_000_000


def stamp(seconds: float) -> str:
    """The kubelet's RFC 3339 time with nanoseconds."""
    whole = int(seconds)
    nanos = round((seconds - whole) * NS)
    return datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


# ---------------------------------------------------------------- the fake cluster
class FakeStream:
    """A pod log answer: the lines there now, then (follow) lines appended later, until closed."""

    def __init__(self, cluster: "FakeCluster", pod: str, query: dict[str, str]):
        self.cluster = cluster
        self.pod = pod
        self.query = query
        self.closed = threading.Event()

    def _wanted(self, entries: list[tuple[float, str]]) -> list[tuple[float, str]]:
        if "sinceTime" in self.query:
            since = datetime.strptime(self.query["sinceTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
            entries = [e for e in entries if e[0] >= since]
        return entries

    def _render(self, entry: tuple[float, str]) -> bytes:
        return f"{stamp(entry[0])} {entry[1]}\n".encode() if self.query.get("timestamps") == "true" else f"{entry[1]}\n".encode()

    def lines(self) -> Iterator[bytes]:
        with self.cluster.lock:
            entries = list(self.cluster.logs.get(self.pod, []))
        tail = self.query.get("tailLines")
        start = max(len(entries) - int(tail), 0) if tail is not None else 0
        sent = len(entries)
        for entry in self._wanted(entries[start:]):
            yield self._render(entry)
        if self.query.get("follow") != "true":
            return
        while not self.closed.is_set():
            with self.cluster.lock:
                entries = list(self.cluster.logs.get(self.pod, []))
                ends = self.cluster.ends_streams.get(self.pod, False)
            for entry in self._wanted(entries[sent:]):
                yield self._render(entry)
            sent = len(entries)
            if ends:
                return  # a kubelet closes the request (the container exited, or the connection broke)
            self.closed.wait(0.01)

    def close(self) -> None:
        self.closed.set()
        self.cluster.closed.append(self.pod)


class FakeCluster:
    """Pods, their workloads and their output; ``request``/``stream`` as ApiServer has them."""

    url = "https://fake:6443"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pods: list[dict[str, Any]] = []
        self.workloads: dict[str, dict[str, Any]] = {}
        self.replicasets: list[dict[str, Any]] = []
        self.logs: dict[str, list[tuple[float, str]]] = {}
        self.ends_streams: dict[str, bool] = {}
        self.streams: list[FakeStream] = []
        self.closed: list[str] = []
        self.lists = 0
        self.on_list: Any = None
        self.forbid_logs = False

    # -- objects
    def workload(self, kind: str, name: str, namespace: str = "ml", **status: Any) -> dict[str, Any]:
        obj = {"kind": kind, "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"}, "status": status}
        self.workloads[f"{kind}/{name}"] = obj
        return obj

    def pod(self, name: str, role: str, owner: str, *, index: int | None = None, created: str = "2026-11-28T01:00:00Z", state: str = "running", phase: str = "Running", restart: str = "Never", container: str | None = None, ordinal_label: bool = True) -> dict[str, Any]:
        annotations = {"batch.kubernetes.io/job-completion-index": str(index)} if index is not None and restart == "Never" else {}
        labels = {MANAGED_BY_LABEL: "madinfra", STACK_LABEL: "demo", ROLE_LABEL: role}
        if index is not None and restart == "Always" and ordinal_label:
            labels["apps.kubernetes.io/pod-index"] = str(index)
        pod = {
            "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "labels": labels, "annotations": annotations, "creationTimestamp": created, "ownerReferences": [{"uid": owner}]},
            "spec": {"containers": [{"name": container or role}], "restartPolicy": restart},
            "status": {"phase": phase, "containerStatuses": [{"name": container or role, "state": {state: {}}}]},
        }
        self.pods.append(pod)
        return pod

    def set_state(self, name: str, state: str, phase: str) -> None:
        pod = next(p for p in self.pods if p["metadata"]["name"] == name)
        pod["status"] = {"phase": phase, "containerStatuses": [{"name": pod["spec"]["containers"][0]["name"], "state": {state: {}}}]}

    def write(self, pod: str, when: float, text: str) -> None:
        with self.lock:
            self.logs.setdefault(pod, []).append((when, text))

    # -- the API
    def request(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None, content_type: str = "") -> Any:
        assert method == "GET"
        if path.endswith("/pods"):
            self.lists += 1
            if self.on_list is not None:
                self.on_list(self.lists)
            return {"items": [dict(p) for p in self.pods]}
        if path.endswith("/replicasets"):
            return {"items": self.replicasets}
        kind = {"jobs": "Job", "statefulsets": "StatefulSet", "deployments": "Deployment"}[path.split("/")[-2]]
        obj = self.workloads.get(f"{kind}/{path.split('/')[-1]}")
        if obj is None:
            raise ApiError(404, "not found")
        return obj

    def stream(self, path: str, query: dict[str, str] | None = None, timeout: float | None = 60) -> FakeStream:
        if self.forbid_logs:
            raise ApiError(403, 'pods "x" is forbidden: User "dev" cannot get resource "pods/log"')
        pod = path.split("/")[-2]
        if not any(p["metadata"]["name"] == pod for p in self.pods):
            raise ApiError(404, f'pods "{pod}" not found')
        stream = FakeStream(self, pod, dict(query or {}))
        self.streams.append(stream)
        return stream


def stack(launcher: str = "torchrun", nodes: int = 2) -> Any:
    raw: dict[str, Any] = {
        "name": "demo",
        "gpu_vendor": "AMD",
        "model": {"image": "rocm/pytorch:latest", "script": "train.py"},
        "distributed": {"launcher": launcher, "nnodes": nodes, "nproc_per_node": 2},
        "k8s": {"namespace": "ml", "gpu_count": 2},
    }
    return resolve(raw)


def desired_of(spec: Any) -> list[Any]:
    return KubernetesProvider(ProviderOptions()).desired(spec, compile(spec))


def training(cluster: FakeCluster) -> tuple[Any, list[Any]]:
    """A two-node torchrun Job (role ``worker``; the Job is named after the stack) with its two pods."""
    spec = stack()
    desired = desired_of(spec)
    assert [r.id for r in desired if r.workload] == ["k8s/Job/demo"]
    job = cluster.workload("Job", "demo")
    cluster.pod("demo-worker-0-abcde", "worker", job["metadata"]["uid"], index=0)
    cluster.pod("demo-worker-1-fghij", "worker", job["metadata"]["uid"], index=1)
    return spec, desired


def shown(lines: Any) -> list[str]:
    return [f"{line.source} {line.text}" for line in lines]


# ---------------------------------------------------------------- parsing
def test_kubelet_timestamps_parse_to_exact_nanoseconds_in_any_zone() -> None:
    assert parse_timestamp("2026-11-28T01:00:00.123456789Z") == T0 * NS + 123_456_789
    assert parse_timestamp("2026-11-28T01:00:00Z") == T0 * NS
    assert parse_timestamp("2026-11-28T01:00:00.5Z") == T0 * NS + 500_000_000
    assert parse_timestamp("2026-11-28T02:00:00.25+01:00") == T0 * NS + 250_000_000
    assert parse_timestamp("2026-11-27T23:30:00-01:30") == T0 * NS
    assert parse_timestamp("yesterday") is None
    assert parse_timestamp("2026-11-28 01:00:00Z") is None


def test_a_log_line_splits_at_the_first_space_and_keeps_the_rest_verbatim() -> None:
    timed = parse_line(b"2026-11-28T01:00:00.000000001Z  step 1:  loss 2.5 \r\n", "worker", 1)
    assert timed.ns == T0 * NS + 1
    assert timed.line == LogLine("worker", 1, " step 1:  loss 2.5 ", time=T0 + 1e-9)
    plain = parse_line(b"no time here\n", "worker", 0)
    assert plain.ns is None and plain.line == LogLine("worker", 0, "no time here")


def test_since_time_is_rounded_down_to_the_whole_second_the_api_takes() -> None:
    assert since_time(T0 * NS + 999_999_999) == "2026-11-28T01:00:00Z"
    assert since_time(T0 * NS) == "2026-11-28T01:00:00Z"


# ---------------------------------------------------------------- ranks
def _pod(name: str, created: str, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": name, "creationTimestamp": created, **metadata}}


def test_job_pods_rank_by_completion_index_and_a_one_node_job_is_rank_0() -> None:
    job = RoleSource("worker", "Job", "demo-worker", "ml", "worker")
    pods = [
        _pod("demo-worker-1-x", "2026-11-28T01:00:00Z", annotations={"batch.kubernetes.io/job-completion-index": "1"}),
        _pod("demo-worker-0-y", "2026-11-28T01:00:01Z", annotations={"batch.kubernetes.io/job-completion-index": "0"}),
        _pod("demo-worker-abcde", "2026-11-28T01:00:02Z"),
    ]
    assert assign_ranks(job, pods) == {"demo-worker-1-x": 1, "demo-worker-0-y": 0, "demo-worker-abcde": 0}


def test_statefulset_pods_rank_by_ordinal_from_the_label_or_the_name() -> None:
    sts = RoleSource("decode", "StatefulSet", "demo-decode", "ml", "decode")
    pods = [_pod("demo-decode-2", "2026-11-28T01:00:00Z"), _pod("demo-decode-10", "2026-11-28T01:00:00Z", labels={"apps.kubernetes.io/pod-index": "10"})]
    assert assign_ranks(sts, pods) == {"demo-decode-2": 2, "demo-decode-10": 10}


def test_deployment_pods_rank_by_creation_time_then_name() -> None:
    dep = RoleSource("server", "Deployment", "demo-server", "ml", "server")
    pods = [_pod("demo-server-zz", "2026-11-28T01:00:05Z"), _pod("demo-server-bb", "2026-11-28T01:00:01Z"), _pod("demo-server-aa", "2026-11-28T01:00:01Z")]
    assert assign_ranks(dep, pods) == {"demo-server-aa": 0, "demo-server-bb": 1, "demo-server-zz": 2}


def test_a_deployment_pod_that_replaces_an_ended_one_takes_its_rank_and_the_others_keep_theirs() -> None:
    dep = RoleSource("server", "Deployment", "demo-server", "ml", "server")
    held = {"demo-server-aa": 0, "demo-server-bb": 1}
    pods = [_pod("demo-server-bb", "2026-11-28T01:00:01Z"), _pod("demo-server-aa", "2026-11-28T01:00:09Z"), _pod("demo-server-cc", "2026-11-28T01:00:10Z")]
    ranks = assign_ranks(dep, pods, held, ended=frozenset({"demo-server-aa"}))
    assert ranks == {"demo-server-aa": 0, "demo-server-bb": 1, "demo-server-cc": 0}
    assert assign_ranks(dep, pods, held)["demo-server-cc"] == 2


def test_container_state_tells_what_can_be_read_and_what_writes_no_more() -> None:
    def pod(phase: str, state: dict[str, Any], restart: str = "Never", last: dict[str, Any] | None = None) -> dict[str, Any]:
        status = {"name": "worker", "state": state, **({"lastState": last} if last else {})}
        return {"spec": {"restartPolicy": restart}, "status": {"phase": phase, "containerStatuses": [status]}}

    assert container_state(pod("Pending", {"waiting": {"reason": "ContainerCreating"}}), "worker") == "waiting"
    assert container_state(pod("Running", {"running": {}}), "worker") == "running"
    assert container_state(pod("Succeeded", {"terminated": {"exitCode": 0}}), "worker") == "ended"
    assert container_state(pod("Running", {"terminated": {"exitCode": 1}}, restart="Always"), "worker") == "running"
    assert container_state(pod("Running", {"waiting": {"reason": "CrashLoopBackOff"}}, "Always", {"terminated": {"exitCode": 1}}), "worker") == "running"
    assert container_state({"status": {"phase": "Pending"}}, "worker") == "waiting"


# ---------------------------------------------------------------- reading what is there
def test_every_rank_is_read_from_the_main_container_and_merged_in_time_order() -> None:
    cluster = FakeCluster()
    spec, desired = training(cluster)
    cluster.write("demo-worker-0-abcde", T0 + 0.10, "rank0 step 1")
    cluster.write("demo-worker-0-abcde", T0 + 0.30, "rank0 step 2")
    cluster.write("demo-worker-1-fghij", T0 + 0.20, "rank1 step 1")
    cluster.write("demo-worker-1-fghij", T0 + 0.40, "rank1 step 2")
    lines = list(read_logs(cluster, spec, desired, LogQuery()))
    assert shown(lines) == ["worker[0] rank0 step 1", "worker[1] rank1 step 1", "worker[0] rank0 step 2", "worker[1] rank1 step 2"]
    assert lines[0].time == pytest.approx(T0 + 0.10)
    assert all(s.query == {"container": "worker", "timestamps": "true"} for s in cluster.streams)


def test_rank_tail_and_since_go_to_the_kubelet_and_are_applied_exactly_per_rank() -> None:
    cluster = FakeCluster()
    spec, desired = training(cluster)
    for i in range(4):
        cluster.write("demo-worker-0-abcde", T0 + i + 0.5, f"rank0 line {i}")
        cluster.write("demo-worker-1-fghij", T0 + i + 0.6, f"rank1 line {i}")
    assert shown(read_logs(cluster, spec, desired, LogQuery(rank=1))) == [f"worker[1] rank1 line {i}" for i in range(4)]
    assert [s.pod for s in cluster.streams] == ["demo-worker-1-fghij"]
    cluster.streams.clear()
    assert shown(read_logs(cluster, spec, desired, LogQuery(tail=1))) == ["worker[0] rank0 line 3", "worker[1] rank1 line 3"]
    assert {s.query.get("tailLines") for s in cluster.streams} == {"1"}
    cluster.streams.clear()
    # since 01:00:02.55 -> the API gets 01:00:02 (whole seconds); rank 0's line at 2.5 is cut here
    assert shown(read_logs(cluster, spec, desired, LogQuery(since=T0 + 2.55))) == ["worker[1] rank1 line 2", "worker[0] rank0 line 3", "worker[1] rank1 line 3"]
    assert {s.query.get("sinceTime") for s in cluster.streams} == {"2026-11-28T01:00:02Z"}
    cluster.streams.clear()
    assert shown(read_logs(cluster, spec, desired, LogQuery(since=T0 + 1.55, tail=1))) == ["worker[0] rank0 line 3", "worker[1] rank1 line 3"]
    assert shown(read_logs(cluster, spec, desired, LogQuery(tail=0))) == []


def test_a_jobs_retries_of_one_index_are_one_stream_for_tail() -> None:
    cluster = FakeCluster()
    spec = stack(nodes=2)
    desired = desired_of(spec)
    job = cluster.workload("Job", "demo")
    cluster.pod("demo-worker-0-first", "worker", "uid-demo", index=0, created="2026-11-28T01:00:00Z", state="terminated", phase="Failed")
    cluster.pod("demo-worker-0-again", "worker", job["metadata"]["uid"], index=0, created="2026-11-28T01:01:00Z")
    cluster.write("demo-worker-0-first", T0 + 1, "first try 1")
    cluster.write("demo-worker-0-first", T0 + 2, "first try 2")
    cluster.write("demo-worker-0-again", T0 + 61, "second try 1")
    assert shown(read_logs(cluster, spec, desired, LogQuery(tail=2))) == ["worker[0] first try 2", "worker[0] second try 1"]


def test_pods_of_an_old_job_of_the_same_name_are_not_read() -> None:
    cluster = FakeCluster()
    spec, desired = training(cluster)
    cluster.pod("demo-worker-0-oldjob", "worker", "uid-of-a-replaced-job", index=0)
    cluster.write("demo-worker-0-oldjob", T0, "old job")
    cluster.write("demo-worker-0-abcde", T0 + 1, "new job")
    assert shown(read_logs(cluster, spec, desired, LogQuery())) == ["worker[0] new job"]


def test_pods_not_started_are_skipped_and_a_role_with_none_started_is_one_sentence() -> None:
    cluster = FakeCluster()
    spec, desired = training(cluster)
    cluster.set_state("demo-worker-1-fghij", "waiting", "Pending")
    cluster.write("demo-worker-0-abcde", T0, "hello")
    assert shown(read_logs(cluster, spec, desired, LogQuery())) == ["worker[0] hello"]
    cluster.set_state("demo-worker-0-abcde", "waiting", "Pending")
    with pytest.raises(ProviderError, match=r"no pod of role worker has started its container yet .*--follow"):
        list(read_logs(cluster, spec, desired, LogQuery(role="worker")))


def test_errors_are_one_sentence_naming_the_fix() -> None:
    cluster = FakeCluster()
    spec = stack()
    desired = desired_of(spec)
    with pytest.raises(ProviderError, match=r"^nothing of role worker runs in namespace ml; run `madinfra apply`"):
        list(read_logs(cluster, spec, desired, LogQuery(role="worker")))
    with pytest.raises(ProviderError, match=r"stack 'demo' has no role 'decode' \(its roles: worker\)"):
        list(read_logs(cluster, spec, desired, LogQuery(role="decode")))
    training(cluster)
    with pytest.raises(ProviderError, match=r"role worker has no rank 7 in namespace ml \(ranks there: 0, 1\)"):
        list(read_logs(cluster, spec, desired, LogQuery(role="worker", rank=7)))
    cluster.forbid_logs = True
    with pytest.raises(ProviderError, match=r"refused to read the logs of pod ml/demo-worker-0-abcde container worker \(pods/log\) \(403: .*\); check your credentials and RBAC"):
        list(read_logs(cluster, spec, desired, LogQuery()))


def test_a_deployments_replicas_are_ranked_by_creation_for_the_provider_method() -> None:
    spec = resolve({"name": "demo", "model": {"image": "vllm/vllm:latest", "model_path": "/m"}, "distributed": {"launcher": "vllm", "nnodes": 2, "nproc_per_node": 1}, "k8s": {"namespace": "ml", "gpu_count": 1}})
    provider = KubernetesProvider(ProviderOptions(), api=None)
    desired = provider.desired(spec, compile(spec))
    workloads = [r for r in desired if r.workload]
    assert [r.kind for r in workloads] == ["k8s/Deployment"], "vLLM replicas are a Deployment on Kubernetes"
    role = workloads[0].role
    container = workloads[0].spec["spec"]["template"]["spec"]["containers"][0]["name"]
    cluster = FakeCluster()
    dep = cluster.workload("Deployment", workloads[0].name)
    cluster.replicasets.append({"metadata": {"uid": "rs-1", "ownerReferences": [{"uid": dep["metadata"]["uid"]}]}})
    cluster.pod("demo-x-later", role, "rs-1", created="2026-11-28T01:00:09Z", restart="Always", container=container)
    cluster.pod("demo-x-first", role, "rs-1", created="2026-11-28T01:00:01Z", restart="Always", container=container)
    cluster.write("demo-x-later", T0 + 1, "from the later pod")
    cluster.write("demo-x-first", T0 + 2, "from the first pod")
    provider._api = cluster
    assert shown(provider.logs(spec, desired, LogQuery())) == [f"{role}[1] from the later pod", f"{role}[0] from the first pod"]


# ---------------------------------------------------------------- following
def test_the_dedupe_cursor_drops_exactly_what_was_shown_at_the_same_instant() -> None:
    cursor = Cursor(T0 * NS + 5, 2)
    dedupe = Dedupe(cursor, None)
    same = [Timed(T0 * NS + 5, LogLine("w", 0, t)) for t in ("a", "b", "c")]
    kept = [t.line.text for t in [Timed(T0 * NS + 4, LogLine("w", 0, "older")), *same, Timed(T0 * NS + 6, LogLine("w", 0, "d"))] if dedupe.accept(t)]
    assert kept == ["c", "d"]
    assert (cursor.ns, cursor.count) == (T0 * NS + 6, 1)
    assert Dedupe(Cursor(), T0 * NS).accept(Timed(T0 * NS - 1, LogLine("w", 0, "before since"))) is False


def run_follow(cluster: FakeCluster, spec: Any, desired: list[Any], query: LogQuery, limit: float = 10.0, stop_after: int | None = None) -> list[LogLine]:
    """Follow in this thread (as the CLI does) with a fast poll; its clock fails the test
    instead of hanging when following does not end."""
    out: list[LogLine] = []
    deadline = time.monotonic() + limit

    def clock() -> float:
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(f"follow did not end within {limit} s: {shown(out)}")
        return now

    generator = follow(cluster, spec, desired, query, poll=0.02, clock=clock)
    try:
        for line in generator:
            out.append(line)
            if stop_after is not None and len(out) >= stop_after:
                break
    finally:
        generator.close()
    return out


def test_follow_shows_the_backlog_merged_then_new_lines_and_ends_when_the_job_is_done() -> None:
    cluster = FakeCluster()
    spec, desired = training(cluster)
    cluster.write("demo-worker-0-abcde", T0 + 0.2, "rank0 before")
    cluster.write("demo-worker-1-fghij", T0 + 0.1, "rank1 before")

    def script(polls: int) -> None:
        if polls == 3:
            cluster.write("demo-worker-1-fghij", T0 + 5.0, "rank1 while following")
        if polls == 6:
            cluster.write("demo-worker-0-abcde", T0 + 6.0, "rank0 last words")
            cluster.set_state("demo-worker-0-abcde", "terminated", "Succeeded")
            cluster.set_state("demo-worker-1-fghij", "terminated", "Succeeded")
        if polls == 9:
            cluster.workloads["Job/demo"]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}

    cluster.on_list = script
    lines = run_follow(cluster, spec, desired, LogQuery(follow=True))
    assert shown(lines) == ["worker[1] rank1 before", "worker[0] rank0 before", "worker[1] rank1 while following", "worker[0] rank0 last words"]
    assert cluster.lists >= 9, "it went on until the Job was complete"
    follows = [s for s in cluster.streams if s.query.get("follow") == "true"]
    assert sorted(s.pod for s in follows) == ["demo-worker-0-abcde", "demo-worker-1-fghij"]
    assert all(s.closed.is_set() for s in follows), "every follow request is closed"
    assert {s.query["sinceTime"] for s in follows} == {"2026-11-28T01:00:00Z"}, "read again from the last line shown"


def test_a_follow_request_that_ends_while_the_pod_runs_is_reopened_without_repeating_lines() -> None:
    cluster = FakeCluster()
    spec, desired = training(cluster)
    cluster.ends_streams["demo-worker-0-abcde"] = True  # every request ends as soon as it has sent what is there
    for i in range(3):
        cluster.write("demo-worker-0-abcde", T0 + 1.5, f"same instant {i}")
    cluster.write("demo-worker-1-fghij", T0 + 1, "rank1")

    def script(polls: int) -> None:
        if polls == 4:
            cluster.write("demo-worker-0-abcde", T0 + 1.5, "same instant 3")
        if polls == 8:
            for name in ("demo-worker-0-abcde", "demo-worker-1-fghij"):
                cluster.set_state(name, "terminated", "Succeeded")
            cluster.workloads["Job/demo"]["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}

    cluster.on_list = script
    lines = run_follow(cluster, spec, desired, LogQuery(follow=True))
    assert shown(lines) == ["worker[1] rank1"] + [f"worker[0] same instant {i}" for i in range(4)]
    assert len([s for s in cluster.streams if s.pod == "demo-worker-0-abcde" and s.query.get("follow")]) >= 2, "reopened"


def test_follow_with_tail_and_rank_starts_from_the_last_lines_of_that_rank_only() -> None:
    cluster = FakeCluster()
    spec, desired = training(cluster)
    for i in range(5):
        cluster.write("demo-worker-1-fghij", T0 + i, f"rank1 line {i}")
    cluster.write("demo-worker-0-abcde", T0 + 9, "rank0 not asked for")

    def script(polls: int) -> None:
        if polls == 3:
            cluster.write("demo-worker-1-fghij", T0 + 10, "rank1 new")
            cluster.set_state("demo-worker-1-fghij", "terminated", "Succeeded")
            cluster.workloads["Job/demo"]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}

    cluster.on_list = script
    lines = run_follow(cluster, spec, desired, LogQuery(rank=1, tail=2, follow=True))
    assert shown(lines) == ["worker[1] rank1 line 3", "worker[1] rank1 line 4", "worker[1] rank1 new"]
    assert {s.pod for s in cluster.streams} == {"demo-worker-1-fghij"}


def test_a_pod_that_starts_while_following_is_read_from_its_start_and_an_empty_tail_shows_only_new_lines() -> None:
    cluster = FakeCluster()
    spec, desired = training(cluster)
    cluster.set_state("demo-worker-1-fghij", "waiting", "Pending")
    cluster.write("demo-worker-0-abcde", T0, "rank0 old")

    def script(polls: int) -> None:
        if polls == 3:
            cluster.write("demo-worker-1-fghij", T0 + 3, "rank1 first")
            cluster.set_state("demo-worker-1-fghij", "running", "Running")
        if polls == 5:
            cluster.write("demo-worker-0-abcde", T0 + 4, "rank0 new")
        if polls == 7:
            for name in ("demo-worker-0-abcde", "demo-worker-1-fghij"):
                cluster.set_state(name, "terminated", "Succeeded")
            del cluster.workloads["Job/demo"]  # deleted (TTL): done as well

    cluster.on_list = script
    lines = run_follow(cluster, spec, desired, LogQuery(tail=0, follow=True))
    assert shown(lines) == ["worker[1] rank1 first", "worker[0] rank0 new"]


def test_following_a_server_goes_on_until_the_caller_stops_and_then_closes_every_request() -> None:
    spec = resolve({"name": "demo", "model": {"image": "vllm/vllm:latest", "model_path": "/m"}, "distributed": {"launcher": "vllm", "nnodes": 1, "nproc_per_node": 1}, "k8s": {"namespace": "ml", "gpu_count": 1}})
    desired = desired_of(spec)
    workload = next(r for r in desired if r.workload)
    container = workload.spec["spec"]["template"]["spec"]["containers"][0]["name"]
    cluster = FakeCluster()
    dep = cluster.workload("Deployment", workload.name)
    cluster.replicasets.append({"metadata": {"uid": "rs-1", "ownerReferences": [{"uid": dep["metadata"]["uid"]}]}})
    cluster.pod("demo-server-aa", str(workload.role), "rs-1", restart="Always", container=container)
    cluster.write("demo-server-aa", T0, "starting")

    def script(polls: int) -> None:
        if polls == 30:
            cluster.write("demo-server-aa", T0 + 1, "serving")

    cluster.on_list = script
    lines = run_follow(cluster, spec, desired, LogQuery(follow=True), stop_after=2)
    assert [line.text for line in lines] == ["starting", "serving"]
    assert cluster.lists >= 30, "it kept polling the running server"
    assert all(s.closed.is_set() for s in cluster.streams if s.query.get("follow"))
