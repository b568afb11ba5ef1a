"""Fixtures for the Kubernetes provider tests; they live in k8s_support and k8s_sandbox so tests
can import them by name."""

from k8s_sandbox import k8s_sandbox, k8s_stack, new_k8s_stack  # noqa: F401  (pytest fixtures)
from k8s_support import stack_file  # noqa: F401  (pytest fixture)
