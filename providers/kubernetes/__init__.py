"""Kubernetes target: manifests from the launch plan, Pulumi to apply them, the kubernetes client
to read them back. Importing this package loads neither Pulumi nor the kubernetes client."""

from providers.kubernetes.provider import KubernetesProvider

__all__ = ["KubernetesProvider"]
