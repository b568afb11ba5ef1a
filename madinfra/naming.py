"""Names of everything a stack creates, derived from the stack name alone.

Both the launchers (which must know peer addresses, e.g. the K8s pod DNS of rank 0) and the
providers (which create the objects) call these functions, so the two can never disagree, and
``plan`` can find a stack's objects on the cluster without a state file.
madengine's sanitisation rules are kept (lower case, ``[^a-z0-9.-]`` -> ``-``, 253/63 limits with
sha256 truncation) but names are scoped by stack, so two stacks of one model never collide.
"""

from __future__ import annotations

import hashlib
import re

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "madinfra"
STACK_LABEL = "madinfra.io/stack"
ROLE_LABEL = "madinfra.io/role"
RESOURCE_LABEL = "madinfra.io/resource"
SLURM_JOB_PREFIX = "madinfra."


def _hash(value: str, length: int) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def sanitize(value: str, limit: int = 253, allow_dots: bool = True) -> str:
    """madengine's rule: lower-case, invalid characters to '-', long names cut with a hash suffix."""
    pattern = r"[^a-z0-9.-]" if allow_dots else r"[^a-z0-9-]"
    name = re.sub(pattern, "-", value.lower()).strip("-.") or "x"
    if len(name) > limit:
        digest = _hash(name, 12)
        name = f"{name[: limit - 13].rstrip('-.')}-{digest}"
    return name


def dns_label(value: str) -> str:
    """A DNS-1123 label (<= 63, no dots): Services, containers and pods' subdomains."""
    return sanitize(value, limit=63, allow_dots=False)


def label_value(value: str) -> str:
    """Label values are <= 63 characters; madengine prefixes an 8-char hash when truncating."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "-", value).strip("-._")
    if len(clean) <= 63:
        return clean
    return f"{_hash(clean, 8)}-{clean[: 63 - 9].rstrip('-._')}"


def workload_name(stack: str, role: str | None = None) -> str:
    """Job / StatefulSet / Deployment name of a stack's role (the training job has no role suffix)."""
    return dns_label(stack if role in (None, "worker", "server") else f"{stack}-{role}")


def service_name(stack: str, role: str | None = None) -> str:
    """The (headless) Service in front of a role; same name as its workload, as pods' subdomain."""
    return workload_name(stack, role)


def configmap_name(stack: str) -> str:
    return dns_label(f"{stack}-scripts")


def k8s_labels(stack: str, role: str | None = None, model: str | None = None) -> dict[str, str]:
    labels = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, STACK_LABEL: label_value(stack)}
    if role:
        labels[ROLE_LABEL] = label_value(role)
    if model:
        labels["model"] = label_value(model)
    return labels


DEFAULT_CLUSTER_DOMAIN = "cluster.local"


def pod_dns(stack: str, role: str | None, index: int, namespace: str, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
    """Stable DNS of pod ``index`` of a role: ``<workload>-<i>.<svc>.<ns>.svc.<cluster domain>``."""
    return f"{workload_name(stack, role)}-{index}.{service_name(stack, role)}.{namespace}.svc.{cluster_domain}"


def slurm_job_name(stack: str, role: str) -> str:
    """``madinfra.<stack>.<role>``: lets ``squeue`` find a stack's jobs with no state file."""
    return f"{SLURM_JOB_PREFIX}{stack}.{role}"


def slurm_remote_dir(base: str, stack: str) -> str:
    return f"{base.rstrip('/')}/{stack}"
