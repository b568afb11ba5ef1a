"""Running the Pulumi program: Automation API ``refresh``, ``preview`` and targeted ``up`` with a
local file backend (deletes are targeted ``up``s of a program without the deleted resources).

State lives under ``<work_dir>/pulumi/state`` (``file://`` backend, no Pulumi Cloud login) and
is encrypted with a passphrase secrets provider: ``PULUMI_CONFIG_PASSPHRASE`` or
``PULUMI_CONFIG_PASSPHRASE_FILE`` when the user set one, else a random passphrase madinfra keeps
in ``<work_dir>/pulumi/passphrase`` (mode 0600). Engine events are turned into progress lines
and one ``record`` call per planned change, as soon as Pulumi reports that resource done; the
steps Pulumi announced are kept per resource, so the provider can compare them with the plan.

The ``pulumi`` binary is looked up before anything else happens, so a machine without it gets
one sentence saying what to install and nothing is touched.
"""

from __future__ import annotations

import os
import secrets as random_secrets
import shutil
from pathlib import Path
from typing import Any, Callable

from madinfra.errors import MadinfraError, ProviderError
from madinfra.resources import Change, ProgressCallback, RecordCallback, Resource
from madinfra_kubernetes.program import PROJECT, resource_id_from_urn
from madinfra_kubernetes.pulumi_state import backend_dir

INSTALL_HINT = "install it with `curl -fsSL https://get.pulumi.com | sh` (or see https://www.pulumi.com/docs/install/) and make sure `pulumi` is on PATH"
_INTERMEDIATE_OPS = frozenset({"delete-replaced", "discard-replaced", "read", "read-replacement", "refresh", "remove-pending-replace"})
_DELETE_OPS = frozenset({"delete", "discard"})

ToLive = Callable[[dict[str, Any], str], Resource]


def require_pulumi(action: str = "apply") -> str:
    """Path of the ``pulumi`` binary, or a MadinfraError saying what to install (the CLI, or the
    Python SDK, which madinfra-kubernetes depends on but a broken environment may lack)."""
    import importlib.util

    missing = [name for name in ("pulumi", "pulumi_kubernetes") if importlib.util.find_spec(name) is None]
    if missing:
        raise MadinfraError(
            f"madinfra {action} deploys Kubernetes stacks with Pulumi, but the Python package{'s' if len(missing) > 1 else ''} {' and '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not installed; install {'them' if len(missing) > 1 else 'it'} with `pip install -e providers/kubernetes` (the madinfra-kubernetes provider, which depends on {'them' if len(missing) > 1 else 'it'}; plan, render and validate work without)"
        )
    path = shutil.which("pulumi")
    if path is None:
        raise MadinfraError(
            f"madinfra {action} deploys Kubernetes stacks with Pulumi, but the `pulumi` command is not installed; {INSTALL_HINT} (plan, render and validate work without it)"
        )
    return path


def passphrase_env(pulumi_dir: Path) -> dict[str, str]:
    """The passphrase settings to hand to Pulumi (the user's own if set)."""
    if os.environ.get("PULUMI_CONFIG_PASSPHRASE") is not None or os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        return {}
    path = pulumi_dir / "passphrase"
    if not path.exists():
        pulumi_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(random_secrets.token_urlsafe(32))
    return {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path)}


def select_stack(stack: str, work_dir: Path, program: Callable[[], None]) -> Any:
    """Create or select the Pulumi stack ``stack`` of project ``madinfra`` in the file backend."""
    from pulumi import automation as auto

    pulumi_dir = (work_dir / "pulumi").resolve()
    state_dir = backend_dir(work_dir)
    project_dir = pulumi_dir / "project"
    state_dir.mkdir(parents=True, exist_ok=True)
    project_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_KUBERNETES_MANAGED_BY_LABEL": "madinfra",
        # madinfra owns every field it sets: after `kubectl scale` or `kubectl edit` another field
        # manager owns the drifted field, and server-side apply must take it back, not conflict.
        "PULUMI_K8S_ENABLE_PATCH_FORCE": "true",
        **passphrase_env(pulumi_dir),
    }
    settings = auto.ProjectSettings(name=PROJECT, runtime="python", backend=auto.ProjectBackend(url=f"file://{state_dir}"))
    options = auto.LocalWorkspaceOptions(work_dir=str(project_dir), project_settings=settings, secrets_provider="passphrase", env_vars=env)
    try:
        return auto.create_or_select_stack(stack_name=stack, project_name=PROJECT, program=program, opts=options)
    except FileNotFoundError:
        raise MadinfraError(f"the `pulumi` command could not be run; {INSTALL_HINT}") from None
    except auto.CommandError as exc:
        raise ProviderError(f"Pulumi could not open stack '{stack}' in {state_dir}: {_last_line(str(exc))}") from None


def _op(meta: Any) -> str:
    """The step's operation as plain text (events carry an ``OpType`` str enum)."""
    return str(getattr(meta.op, "value", meta.op))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(("code:", "stdout:", "stderr:"))]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["unknown error"])[-1]


class EventRouter:
    """Engine events -> progress lines and exactly one ``record`` per planned change.

    Changes in ``hold`` (workloads whose readiness is checked after Pulumi is done with them) are
    not recorded when Pulumi reports them: their live state is kept until ``release`` says
    whether they became ready, so a rollout that never gets ready is recorded as failed.
    """

    def __init__(self, changes: list[Change], progress: ProgressCallback, record: RecordCallback, to_live: ToLive, hold: set[str] | None = None):
        self.changes = {c.resource_id: c for c in changes}
        self.progress = progress
        self.record = record
        self.to_live = to_live
        self.hold = set(hold or ())
        self.recorded: set[str] = set()
        self.held: dict[str, Resource | None] = {}
        self.errors: dict[str, str] = {}
        self.steps: dict[str, list[str]] = {}
        """Every step Pulumi announced per madinfra resource id, in order (``pulumi_action``)."""

    def report(self, rid: str, live: Resource | None, error: Exception | None) -> None:
        """The outcome of ``rid`` as Pulumi saw it (once; later reports are ignored)."""
        if rid in self.recorded or rid not in self.changes:
            return
        self.recorded.add(rid)
        if error is None and rid in self.hold:
            self.held[rid] = live
            return
        self.record(self.changes[rid], live, error)

    def release(self, rid: str, error: Exception | None = None) -> None:
        """Record a held change now that its readiness is known (``error`` if it is not ready)."""
        if rid in self.held:
            self.record(self.changes[rid], self.held.pop(rid), error)

    def finish(self, rid: str, live: Resource | None, error: Exception | None = None) -> None:
        """Record a change whose outcome the provider established itself (a pool rolled replica
        by replica, or rolled back), with the live object as it is now."""
        if rid not in self.changes or (rid in self.recorded and rid not in self.held):
            return
        self.held.pop(rid, None)
        self.recorded.add(rid)
        self.record(self.changes[rid], live, error)

    def fail(self, rids: list[str], error: Exception) -> None:
        """Record ``error`` for every change of ``rids`` that is held or not reported yet."""
        for rid in rids:
            self.release(rid, error)
            self.report(rid, None, error)

    def overrule(self, rids: list[str], error: Exception) -> None:
        """Record ``error`` for ``rids`` even where Pulumi already reported success: the step it
        took was not the planned one, so state must say the resource is not as planned."""
        for rid in rids:
            if rid in self.recorded and rid not in self.held and rid in self.changes:
                self.record(self.changes[rid], None, error)
        self.fail(rids, error)

    def __call__(self, event: Any) -> None:
        if event.diagnostic_event is not None and event.diagnostic_event.urn:
            diag = event.diagnostic_event
            rid = resource_id_from_urn(diag.urn)
            message = " ".join(diag.message.split())
            if message:
                self.progress(rid, message)
            if diag.severity == "error" and message:
                self.errors[rid] = message
        elif event.resource_pre_event is not None:
            meta = event.resource_pre_event.metadata
            rid = resource_id_from_urn(meta.urn)
            if "pulumi:providers:" not in meta.urn:
                self.steps.setdefault(rid, []).append(_op(meta))
            if rid in self.changes and _op(meta) != "same":
                self.progress(rid, f"{_op(meta)} started")
        elif event.res_outputs_event is not None:
            self._outputs(event.res_outputs_event.metadata)
        elif event.res_op_failed_event is not None:
            rid = resource_id_from_urn(event.res_op_failed_event.metadata.urn)
            why = self.errors.get(rid, f"Pulumi {_op(event.res_op_failed_event.metadata)} failed")
            self.report(rid, None, ProviderError(f"{rid}: {why}"))

    def _outputs(self, meta: Any) -> None:
        rid = resource_id_from_urn(meta.urn)
        change = self.changes.get(rid)
        op = _op(meta)
        if change is None or op in _INTERMEDIATE_OPS:
            return
        if change.action == "delete":
            if op in _DELETE_OPS:
                self.progress(rid, "deleted")
                self.report(rid, None, None)
            return
        if op in _DELETE_OPS:
            return
        state = meta.new
        outputs = dict(state.outputs) if state is not None and state.outputs else {}
        kind = rid.split("/")[1]
        self.progress(rid, "done" if op == "same" else f"{op} done")
        self.report(rid, self.to_live(outputs, kind) if outputs.get("metadata") else None, None)

    def unrecorded(self) -> list[Change]:
        return [c for rid, c in self.changes.items() if rid not in self.recorded]


_REPLACE_OPS = frozenset({"replace", "create-replacement", "delete-replaced", "discard-replaced", "import-replacement", "read-replacement"})
_IGNORED_OPS = frozenset({"refresh", "read", "remove-pending-replace"})


def pulumi_action(ops: list[str]) -> str:
    """What Pulumi did to one resource, in madinfra's words, from the ops it announced."""
    seen = [op for op in ops if op not in _IGNORED_OPS]
    if any(op in _REPLACE_OPS for op in seen):
        return "replace"
    for op, action in (("delete", "delete"), ("discard", "delete"), ("create", "create"), ("import", "create"), ("update", "update")):
        if op in seen:
            return action
    return "same"


def refresh(stack: Any) -> None:
    """``pulumi refresh`` of everything Pulumi's state holds, before a preview or an ``up``: drift
    becomes visible to Pulumi's diff, objects deleted outside madinfra leave its state, and the
    pending creates of an apply that was killed are cleared. (A refresh combined with a targeted
    ``up`` refuses targets that are not in the state yet, i.e. every object to be created.)"""
    from pulumi import automation as auto

    try:
        stack.refresh(color="never", clear_pending_creates=True, suppress_outputs=True, suppress_progress=True)
    except FileNotFoundError:
        raise MadinfraError(f"the `pulumi` command could not be run; {INSTALL_HINT}") from None
    except auto.CommandError as exc:
        raise ProviderError(f"pulumi refresh failed for stack '{stack.name}': {_last_line(str(exc))}") from None


def up(stack: Any, targets: list[str], router: EventRouter, replace: list[str] | None = None) -> None:
    """``pulumi up`` limited to the planned resources (after ``refresh``); ``replace``: URNs
    Pulumi must replace even when its own diff finds no change."""
    from pulumi import automation as auto

    try:
        stack.up(
            on_event=router,
            target=targets,
            replace=replace or None,
            color="never",
            suppress_outputs=True,
            suppress_progress=True,
        )
    except FileNotFoundError:
        raise MadinfraError(f"the `pulumi` command could not be run; {INSTALL_HINT}") from None
    except auto.CommandError as exc:
        detail = next(iter(router.errors.values()), None) or _last_line(str(exc))
        raise ProviderError(f"pulumi up failed for stack '{stack.name}': {detail}") from None


def preview(stack: Any, targets: list[str], replace: list[str] | None = None) -> dict[str, str]:
    """The step Pulumi would take for each targeted resource, so an apply can stop before
    changing anything when Pulumi would not do what the plan says."""
    from pulumi import automation as auto

    steps: dict[str, list[str]] = {}
    errors: list[str] = []

    def collect(event: Any) -> None:
        if event.resource_pre_event is not None:
            meta = event.resource_pre_event.metadata
            if "pulumi:providers:" not in meta.urn:
                steps.setdefault(resource_id_from_urn(meta.urn), []).append(_op(meta))
        elif event.diagnostic_event is not None and event.diagnostic_event.severity == "error":
            errors.append(" ".join(event.diagnostic_event.message.split()))

    try:
        stack.preview(on_event=collect, target=targets, replace=replace or None, color="never", suppress_outputs=True, suppress_progress=True)
    except FileNotFoundError:
        raise MadinfraError(f"the `pulumi` command could not be run; {INSTALL_HINT}") from None
    except auto.CommandError as exc:
        detail = next(iter(errors), None) or _last_line(str(exc))
        raise ProviderError(f"pulumi preview failed for stack '{stack.name}': {detail}") from None
    return {rid: pulumi_action(ops) for rid, ops in steps.items()}
