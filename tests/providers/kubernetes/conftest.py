"""Fixtures for the Kubernetes provider tests; they live in k8s_support so tests can import it."""

from k8s_support import cluster, stack_file  # noqa: F401  (pytest fixtures)
