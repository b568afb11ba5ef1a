"""Kubernetes' update rules per kind: the one source of truth for the planner and for Pulumi.

The planner reads ``force_replace`` to say ``-/+`` exactly where the API server would reject an
in-place change, and the Pulumi program passes the same paths as ``replace_on_changes`` (with
``delete_before_replace``, because madinfra's object names are fixed and two objects of one name
cannot coexist). ``server_owned`` lists fields the API server fills or rewrites; madinfra's
manifests never set them (a test checks that), so dropping them from the comparison hides only
server noise, never a user change.

Paths are dotted mapping keys without list indices (``spec.template.spec.containers.ports``),
matching every field below them. Values that only count as noise when they equal the server's
default (``Service.spec.type: ClusterIP``, an allocated ``clusterIP``) and keys that contain dots
(``batch.kubernetes.io/job-name`` labels) cannot be written as such paths; ``live.clean`` drops
those before a live object reaches the planner.
"""

from __future__ import annotations

from madinfra.resources import UpdateRules

KINDS = ("Namespace", "Secret", "ConfigMap", "PersistentVolumeClaim", "Service", "Job", "Deployment", "StatefulSet")
"""Every kind madinfra creates, in the order they are read and created."""

WORKLOAD_KINDS = frozenset({"Job", "Deployment", "StatefulSet"})

_METADATA_SERVER_OWNED = (
    "metadata.uid",
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.creationTimestamp",
    "metadata.managedFields",
    "metadata.selfLink",
    "metadata.deletionTimestamp",
    "metadata.deletionGracePeriodSeconds",
    "metadata.generateName",
    "status",
)

_POD_TEMPLATE_SERVER_OWNED = tuple(
    f"spec.template.{path}"
    for path in (
        "metadata.creationTimestamp",
        "spec.dnsPolicy",
        "spec.schedulerName",
        "spec.securityContext",
        "spec.serviceAccount",  # deprecated alias the server copies from serviceAccountName
        "spec.containers.terminationMessagePath",
        "spec.containers.terminationMessagePolicy",
        "spec.containers.ports.protocol",
        "spec.containers.env.valueFrom.fieldRef.apiVersion",
        "spec.containers.readinessProbe.httpGet.scheme",
        "spec.initContainers.terminationMessagePath",
        "spec.initContainers.terminationMessagePolicy",
        "spec.volumes.configMap.defaultMode",
        "spec.volumes.secret.defaultMode",
    )
)

_SERVER_OWNED: dict[str, tuple[str, ...]] = {
    "Namespace": ("spec.finalizers",),
    "Secret": (),
    "ConfigMap": (),
    "PersistentVolumeClaim": ("spec.volumeName", "spec.volumeMode"),
    "Service": (
        "spec.clusterIPs",
        "spec.ipFamilies",
        "spec.ipFamilyPolicy",
        "spec.internalTrafficPolicy",
        "spec.sessionAffinity",
        "spec.ports.protocol",
        "spec.ports.targetPort",
    ),
    "Job": (
        "spec.selector",  # generated from the Job's uid; madinfra never sets it
        "spec.suspend",
        "spec.podReplacementPolicy",
        *_POD_TEMPLATE_SERVER_OWNED,
    ),
    "Deployment": (
        "spec.revisionHistoryLimit",
        "spec.progressDeadlineSeconds",
        *_POD_TEMPLATE_SERVER_OWNED,
    ),
    "StatefulSet": (
        "spec.revisionHistoryLimit",
        "spec.updateStrategy",
        "spec.persistentVolumeClaimRetentionPolicy",
        *_POD_TEMPLATE_SERVER_OWNED,
    ),
}

_FORCE_REPLACE: dict[str, tuple[str, ...]] = {
    "Namespace": (),
    # ``immutable: true`` objects reject every data change, and the flag cannot be turned off.
    "Secret": ("metadata.namespace", "immutable", "type"),
    "ConfigMap": ("metadata.namespace", "immutable"),
    # A claim's class, access modes and mode are fixed once bound; its size may grow in place
    # (the server refuses to shrink it, and says so at apply).
    "PersistentVolumeClaim": ("metadata.namespace", "spec.storageClassName", "spec.accessModes", "spec.volumeMode", "spec.selector"),
    # A transition to or from ExternalName always adds or removes spec.externalName, so listing
    # that field replaces exactly on those type changes (ClusterIP <-> NodePort stays in place).
    "Service": ("metadata.namespace", "spec.clusterIP", "spec.externalName"),
    # A Job's pod template is immutable; completions may change only together with parallelism
    # for Indexed Jobs, and completionMode never: madinfra replaces on any of them.
    "Job": (
        "metadata.namespace",
        "spec.selector",
        "spec.manualSelector",
        "spec.template",
        "spec.completions",
        "spec.completionMode",
        "spec.parallelism",
        "spec.podFailurePolicy",
        "spec.backoffLimitPerIndex",
    ),
    "Deployment": ("metadata.namespace", "spec.selector"),
    # replicas, template, updateStrategy, minReadySeconds change in place (rolling update).
    "StatefulSet": (
        "metadata.namespace",
        "spec.selector",
        "spec.volumeClaimTemplates",
        "spec.serviceName",
        "spec.podManagementPolicy",
    ),
}

_POD_TEMPLATE_UNORDERED = tuple(
    f"spec.template.spec.{path}"
    for path in (
        "containers.env",
        "containers.ports",
        "containers.volumeMounts",
        "initContainers.env",
        "initContainers.volumeMounts",
        "volumes",
    )
)
"""Lists whose order carries no meaning for madinfra's pods (env values never reference each
other: ``$`` is escaped), keyed by ``name`` in diffs: ``env[HF_HOME].value``."""

_UNORDERED: dict[str, tuple[str, ...]] = {
    "Service": ("spec.ports",),
    "Job": _POD_TEMPLATE_UNORDERED,
    "Deployment": _POD_TEMPLATE_UNORDERED,
    "StatefulSet": _POD_TEMPLATE_UNORDERED,
}


_POD_TEMPLATE_OPTIONAL = tuple(
    f"spec.template.spec.{path}"
    for path in (
        "nodeSelector",
        "tolerations",
        "serviceAccountName",
        "imagePullSecrets",
        "hostIPC",
        "subdomain",
        "initContainers",
        "containers.readinessProbe",
        "containers.envFrom",
        "containers.ports",
    )
)

_COMPARED_WHEN_UNSET: dict[str, tuple[str, ...]] = {
    # live.clean drops the server's ClusterIP type and allocated IPs, so what is left is ours.
    "Service": ("spec.clusterIP", "spec.type", "spec.externalName", "spec.publishNotReadyAddresses"),
    "Job": ("spec.ttlSecondsAfterFinished", *_POD_TEMPLATE_OPTIONAL),
    "Deployment": _POD_TEMPLATE_OPTIONAL,
    "StatefulSet": _POD_TEMPLATE_OPTIONAL,
    "ConfigMap": ("data", "binaryData"),
    "Secret": ("data",),
}

_POD_TEMPLATE_WHOLE = ("spec.template.spec.containers.env", "spec.template.spec.initContainers.env")

_WHOLE_FIELDS: dict[str, tuple[str, ...]] = {
    "ConfigMap": ("data", "binaryData"),
    "Secret": ("data",),
    "Job": _POD_TEMPLATE_WHOLE,
    "Deployment": _POD_TEMPLATE_WHOLE,
    "StatefulSet": _POD_TEMPLATE_WHOLE,
}
"""Mappings madinfra owns key by key: an env var or a script file that is gone from the stack
must go from the cluster too."""
"""Fields madinfra sets only in some stacks and the API server never fills in by itself."""


def kind_of(resource_kind: str) -> str:
    """``k8s/Job`` -> ``Job`` (also accepts a bare Kubernetes kind)."""
    return resource_kind.split("/", 1)[1] if resource_kind.startswith("k8s/") else resource_kind


def update_rules(resource_kind: str) -> UpdateRules:
    """The rules of a ``k8s/<Kind>`` resource; unknown kinds get only the metadata rules."""
    kind = kind_of(resource_kind)
    return UpdateRules(
        force_replace=_FORCE_REPLACE.get(kind, ("metadata.namespace",)),
        server_owned=_METADATA_SERVER_OWNED + _SERVER_OWNED.get(kind, ()),
        unordered_lists=_UNORDERED.get(kind, ()),
        managed_fields_only=True,
        compared_when_unset=_COMPARED_WHEN_UNSET.get(kind, ()),
        whole_fields=_WHOLE_FIELDS.get(kind, ()),
    )


def replace_on_changes(resource_kind: str) -> list[str]:
    """Pulumi ``replace_on_changes`` paths: the same fields that force a replacement in plans."""
    return list(update_rules(resource_kind).force_replace)
