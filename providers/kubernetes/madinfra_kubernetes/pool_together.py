"""Apply for a KV cache layout change: the prefill and decode StatefulSets replaced together.

``madinfra.planner.kv_compat`` decides when the pools' layout changes; the plan then shows both
pools' rolls as one step (``PoolRollout.together``). A StatefulSet's new pods take the old pods'
names, so the two versions cannot run side by side and be switched between; instead no pod of
either version serves while the other's does:

1. both StatefulSets go to zero replicas on their recorded (old) spec in one targeted Pulumi
   ``up``, and apply waits until every pod of both is gone (the proxy's URLs then resolve to
   nothing: requests fail rather than cross versions);
2. the planned update of both (new template, final replicas) is one ``up``, checked against
   the plan like any other step;
3. every pod of both must be Ready on the new revision.

On failure, unless ``--no-rollback``, the same two steps bring back the recorded specs (both
pools to zero, then both as they were), so old and new pods never meet either; the changes
are recorded failed with "rolled back".
"""

from __future__ import annotations

import time
from typing import Any

from madinfra.errors import MadinfraError, ProviderError
from madinfra.resources import Change
from madinfra_kubernetes.pools import PoolDriver, RolledBack, set_partition


def _where(change: Change) -> tuple[str, str]:
    resource = change.desired or change.current
    assert resource is not None
    metadata = resource.spec["metadata"]
    return metadata["namespace"], metadata["name"]


def _scaled(manifest: dict[str, Any], count: int) -> dict[str, Any]:
    return {**manifest, "spec": {**manifest["spec"], "replicas": count}}


def replace_together(driver: PoolDriver, changes: list[Change], recorded: dict[str, dict[str, Any]]) -> None:
    """Steps 1-3 of the module docstring for ``changes`` (the pools' StatefulSet updates);
    ``recorded``: resource id -> the spec Pulumi recorded (what a rollback restores)."""
    for change in changes:
        set_partition(driver.api, *_where(change), None)
    _stop_all(driver, changes, recorded)
    try:
        driver.progress(changes[0].resource_id, "starting both pools on the new template")
        driver.up({}, True)
        _wait_all(driver, changes, {c.resource_id: int(c.desired.spec["spec"].get("replicas", 1)) for c in changes if c.desired is not None}, "new template")
    except MadinfraError as exc:
        if not driver.rollback:
            raise ProviderError(f"{exc}; stopped there (--no-rollback): both pools are left as they are, run `madinfra plan` to see them") from None
        try:
            _stop_all(driver, changes, recorded)
            driver.progress(changes[0].resource_id, "rolling back: both pools on their previous template")
            driver.up({c.resource_id: recorded[c.resource_id] for c in changes}, False)
            _wait_all(driver, changes, {c.resource_id: int(recorded[c.resource_id]["spec"].get("replicas", 1)) for c in changes}, "previous template")
        except MadinfraError as again:
            raise ProviderError(f"{exc}; rolling back both pools did not finish: {again}") from None
        raise RolledBack(f"{exc}; rolled back: prefill and decode run their previous template again, the change is not applied") from None


def _stop_all(driver: PoolDriver, changes: list[Change], recorded: dict[str, dict[str, Any]]) -> None:
    """Both pools to zero replicas (their recorded spec otherwise), and every pod gone."""
    for change in changes:
        driver.progress(change.resource_id, "stopping every replica (both pools are replaced together)")
    driver.up({c.resource_id: _scaled(recorded[c.resource_id], 0) for c in changes}, False)
    deadline = time.monotonic() + driver.timeout
    for change in changes:
        namespace, name = _where(change)
        sts = driver._statefulset(namespace, name)
        while driver._pods(sts):
            if time.monotonic() >= deadline:
                left = ", ".join(p["metadata"]["name"] for p in driver._pods(sts).values())
                raise ProviderError(f"{change.resource_id}: pods {left} did not go away within {int(driver.timeout)} s ({driver.timeout_field})")
            time.sleep(driver.poll)


def _wait_all(driver: PoolDriver, changes: list[Change], counts: dict[str, int], what: str) -> None:
    for change in changes:
        namespace, name = _where(change)
        sts = driver._statefulset(namespace, name)
        ordinals = list(range(counts[change.resource_id]))
        driver._wait_pods(change.resource_id, sts, ordinals, sts["status"]["updateRevision"], f"{what} on every replica")
