"""Fitting a flow to an unnormalised log-density: objectives, importance sampling, targets."""

from flowkit.variational import targets
from flowkit.variational.annealing import AISConfig, AISResult, AnnealedImportanceSampler, ais
from flowkit.variational.fab import (
    PrioritisedReplayBuffer,
    ReplayBufferConfig,
    ReplaySample,
    fab_loss,
    fab_replay_loss,
)
from flowkit.variational.fitting import FitResult, NonFiniteFitError, fit
from flowkit.variational.objectives import (
    OBJECTIVES,
    alpha_2_loss,
    effective_sample_size,
    forward_kl_loss,
    log_prob_detached,
    reverse_kl_loss,
)
from flowkit.variational.sampling import ImportanceResult, expectation, importance

__all__ = [
    "AISConfig",
    "AISResult",
    "AnnealedImportanceSampler",
    "OBJECTIVES",
    "FitResult",
    "ImportanceResult",
    "NonFiniteFitError",
    "PrioritisedReplayBuffer",
    "ReplayBufferConfig",
    "ReplaySample",
    "ais",
    "alpha_2_loss",
    "effective_sample_size",
    "expectation",
    "fab_loss",
    "fab_replay_loss",
    "fit",
    "forward_kl_loss",
    "importance",
    "log_prob_detached",
    "reverse_kl_loss",
    "targets",
]
