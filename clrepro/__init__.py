"""clrepro: reproducible replications of classic remedies for catastrophic forgetting."""

from clrepro.config import BenchmarkConfig, ModelConfig, TrainConfig
from clrepro.experiment import Experiment
from clrepro.run.profiles import Profile, get_profile

__all__ = [
    "BenchmarkConfig",
    "Experiment",
    "ModelConfig",
    "Profile",
    "TrainConfig",
    "get_profile",
]
