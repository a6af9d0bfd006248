"""Experiments: YAML configs, the job matrix, the inversion runner and the Zarr stores.

Modules: :mod:`~fwi_cli.experiment.config` (schema, overrides), :mod:`~.matrix` (jobs),
:mod:`~.problem` (models, acquisition, wavelet), :mod:`~.runner` (observed data, jobs,
sweeps), :mod:`~.store` (the only writer of Zarr stores).
"""

from fwi_cli.experiment.config import ExperimentConfig, load_config, validate_config
from fwi_cli.experiment.matrix import Job, expand, select
from fwi_cli.experiment.runner import Experiment, JobResult, Progress, SweepSummary

__all__ = [
    "ExperimentConfig", "load_config", "validate_config", "Job", "expand", "select",
    "Experiment", "JobResult", "Progress", "SweepSummary",
]
