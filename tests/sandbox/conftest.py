"""The K8s sandbox fixture, shared with the Kubernetes provider's end-to-end tests."""

from k8s_sandbox import k8s_sandbox  # noqa: F401  (pytest fixture)
