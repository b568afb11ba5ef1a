"""How a node finds its rank and its peers on each target, as values launchers can embed.

Kubernetes gives stable DNS names (Indexed Job / StatefulSet pods behind headless Services), so
peer addresses are literals. SLURM learns its hosts only inside the allocation, so addresses are
shell expressions evaluated on the node. Launchers stay target-agnostic by asking this object.
"""

from __future__ import annotations

from dataclasses import dataclass

from madinfra import naming


@dataclass(frozen=True)
class K8sAddressing:
    """Pods of a role are ``<workload>-<i>``; training uses an Indexed Job, services StatefulSets."""

    stack: str
    namespace: str
    cluster_domain: str = naming.DEFAULT_CLUSTER_DOMAIN
    target: str = "k8s"

    def pod_index(self, role: str) -> str:
        """Index of this pod within its role's workload."""
        if role == "worker":
            return "${JOB_COMPLETION_INDEX}"
        return "${HOSTNAME##*-}"

    def node_rank(self, role: str, first_rank: int) -> str:
        index = self.pod_index(role)
        return index if first_rank == 0 else f"$(( {first_rank} + {index} ))"

    def host(self, role: str, index: int) -> str:
        return naming.pod_dns(self.stack, role, index, self.namespace, self.cluster_domain)

    def master_addr(self, role: str) -> str:
        return self.host(role, 0)

    def self_ip(self) -> str:
        return "${POD_IP}"

    def job_id(self) -> str:
        return naming.workload_name(self.stack)


@dataclass(frozen=True)
class SlurmAddressing:
    """One allocation per role; ``srun`` starts one task per node, rank = ``SLURM_PROCID``."""

    stack: str
    target: str = "slurm"

    def pod_index(self, role: str) -> str:
        return "${SLURM_PROCID}"

    def node_rank(self, role: str, first_rank: int) -> str:
        return "${SLURM_PROCID}" if first_rank == 0 else f"$(( {first_rank} + ${{SLURM_PROCID}} ))"

    def master_addr(self, role: str) -> str:
        """NodeAddr of the allocation's first node: node names need not resolve in DNS."""
        return (
            '$(scontrol show node "$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n1)" -o'
            " | sed -n 's/.* NodeAddr=\\([^ ]*\\).*/\\1/p')"
        )

    def self_ip(self) -> str:
        return "$(hostname -I 2>/dev/null | awk '{print $1}')"

    def job_id(self) -> str:
        return "${SLURM_JOB_ID}"


Addressing = K8sAddressing | SlurmAddressing
