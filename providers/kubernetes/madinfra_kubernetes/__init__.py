"""Kubernetes target: manifests from the launch plan, Pulumi to apply them, a small HTTPS client
(kubeconfig.py, apiserver.py) to read them back. Importing this package loads no Pulumi."""

from madinfra_kubernetes.provider import KubernetesProvider

__all__ = ["KubernetesProvider"]
