"""Settings madengine's schema has that madinfra does not carry out, refused at ``validate``.

A stack file that sets one of them gets a sentence naming the field and what to do instead,
never a silent no-op: a user who asks for a profiler, a pre-script or a storage class must not
believe they got one. Defaults (empty lists, unset values) pass, so every madengine context JSON
that does not use these features still loads.
"""

from __future__ import annotations

from madinfra.config.schema import StackSpec

Problems = list[tuple[str, str]]


def unsupported_problems(spec: StackSpec) -> Problems:
    problems: Problems = []
    if spec.tools:
        problems.append(("tools", "profiling tools (rocprof, rocm-smi tracing, ...) are not supported by madinfra; remove them, or wrap your model.script with the profiler yourself"))
    for field in ("pre_scripts", "post_scripts"):
        if getattr(spec, field):
            problems.append((field, f"{field} are not supported by madinfra; run them from your model.script (it is a shell command, so `bash pre.sh && python train.py` works), or remove {field}"))
    k8s = spec.k8s
    if k8s is not None:
        if k8s.allow_privileged_profiling is not None:
            problems.append(("k8s.allow_privileged_profiling", "only applies to profiling tools, which madinfra does not support; remove it"))
        if k8s.local_path_storage_class is not None:
            problems.append(("k8s.local_path_storage_class", "is not supported by madinfra; set k8s.storage_class (results PVC) or k8s.data_storage_class (data PVC) instead"))
        if k8s.recreate_shared_data_pvc:
            problems.append(("k8s.recreate_shared_data_pvc", "madinfra never deletes a data volume on apply; delete the PVC yourself (kubectl delete pvc) and apply again, or remove this setting"))
        multi = spec.distributed.nnodes > 1
        results_class = (k8s.multi_node_results_storage_class if multi else k8s.single_node_results_storage_class) or k8s.storage_class
        if k8s.results_storage_size != "10Gi" and not results_class:
            problems.append(("k8s.results_storage_size", "sizes the results PVC madinfra creates, which it creates only for a storage class: set k8s.storage_class (or single_/multi_node_results_storage_class), or remove the size"))
        if k8s.results_pvc and results_class:
            problems.append(("k8s.results_pvc", "names an existing claim, so no results PVC is created and its storage class would go unused; remove one of k8s.results_pvc and the results storage class"))
        data_class = k8s.data_storage_class or k8s.nfs_storage_class
        if k8s.data_storage_size != "100Gi" and not data_class:
            problems.append(("k8s.data_storage_size", "sizes the data PVC madinfra creates, which it creates only for a storage class: set k8s.data_storage_class, or remove the size"))
        if k8s.data_pvc and data_class:
            problems.append(("k8s.data_pvc", "names an existing claim, so no data PVC is created and its storage class would go unused; remove one of k8s.data_pvc and the data storage class"))
        if k8s.secrets.runtime_secret_name and k8s.secrets.strategy != "existing":
            problems.append(("k8s.secrets.runtime_secret_name", f"names an existing Secret, which is only used with k8s.secrets.strategy: existing (not {k8s.secrets.strategy}); set the strategy or remove the name"))
    return problems
