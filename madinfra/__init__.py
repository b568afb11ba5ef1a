"""madinfra: Terraform-style plan/apply for distributed ML workloads on Kubernetes and SLURM."""

__version__ = "0.1.0"
