"""PersistentVolumeClaims madinfra creates for a stack's results and data (pure).

madengine creates a results PVC for every run (ReadWriteOnce for one node, ReadWriteMany for
several, ``results_storage_size``) and a shared data PVC (ReadWriteMany, ``data_storage_size``).
madinfra does the same when the stack names a storage class for it, and keeps the claim across
applies (madengine deletes it on the next run, and the results with it); ``destroy`` removes it.
A claim named by ``k8s.results_pvc`` / ``k8s.data_pvc`` is an existing one: mounted, never created.

madengine's presets name one site's class (``nfs-banff``) as the default; madinfra's do not, so
a stack without a storage class gets no PVC rather than one that never binds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from madinfra.config.schema import StackSpec
from madinfra.naming import dns_label

DEFAULT_RESULTS_SIZE = "10Gi"
DEFAULT_DATA_SIZE = "100Gi"


@dataclass(frozen=True)
class Volume:
    name: str
    storage_class: str
    access_mode: str
    size: str

    def body(self) -> dict[str, Any]:
        return {
            "spec": {
                "accessModes": [self.access_mode],
                "storageClassName": self.storage_class,
                "resources": {"requests": {"storage": self.size}},
            }
        }


def results_volume(spec: StackSpec) -> Volume | None:
    """The results claim to create, if any: single- or multi-node class, else ``storage_class``."""
    k8s = spec.k8s
    if k8s is None or k8s.results_pvc:
        return None
    multi = spec.distributed.nnodes > 1
    chosen = (k8s.multi_node_results_storage_class if multi else k8s.single_node_results_storage_class) or k8s.storage_class
    if not chosen:
        return None
    return Volume(dns_label(f"{spec.name}-results"), chosen, "ReadWriteMany" if multi else "ReadWriteOnce", k8s.results_storage_size)


def data_volume(spec: StackSpec) -> Volume | None:
    """The shared data claim to create, if any (``data_storage_class``, else ``nfs_storage_class``)."""
    k8s = spec.k8s
    if k8s is None or k8s.data_pvc:
        return None
    chosen = k8s.data_storage_class or k8s.nfs_storage_class
    if not chosen:
        return None
    return Volume(dns_label(f"{spec.name}-data"), chosen, "ReadWriteMany", k8s.data_storage_size)
