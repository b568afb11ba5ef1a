"""SLURM provider: sbatch jobs per role pool over SSH (Fabric); see ``provider.py``."""

from madinfra_slurm.provider import JobNotReady, SlurmProvider

__all__ = ["JobNotReady", "SlurmProvider"]
