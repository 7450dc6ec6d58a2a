"""flowkit.fit: the command line's meaning in one call (inputs, standardisation, validation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flowkit
from flowkit.train import TrainConfig, Trainer
from flowkit.train.config import ConfigError


def _correlated(count: int, seed: int) -> np.ndarray:
    """Rows in their own units: a large offset and scale, and a curved dependence."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, count))
    return np.stack([1e6 + 3e4 * a, 50.0 * (a**2 + 0.3 * b)], axis=1)


def _tiny_nsf() -> flowkit.Flow:
    torch.manual_seed(0)
    return flowkit.presets.nsf(2, transforms=2, hidden_features=(16,))


def _mean_nll(flow: flowkit.Flow, rows: np.ndarray) -> float:
    with torch.no_grad():
        return float(-flow.eval().log_prob(torch.as_tensor(rows)).mean())


def test_fit_takes_a_csv_path_as_the_same_rows(tmp_path):
    rows = _correlated(300, seed=0)
    path = tmp_path / "train.csv"
    np.savetxt(path, rows, delimiter=",", header="a,b", comments="", fmt="%.17g")
    from_file = flowkit.fit(_tiny_nsf(), str(path), epochs=2)
    from_array = flowkit.fit(_tiny_nsf(), rows, epochs=2)
    assert from_file.train_losses == from_array.train_losses and from_file.steps == 2 * 4
    assert from_file.best is not None and len(from_file.validation_history) == 3


def test_fit_standardises_rows_in_their_own_units_inside_the_model():
    train, test = _correlated(400, seed=0), _correlated(200, seed=1)
    result = flowkit.fit(_tiny_nsf(), train, test, epochs=3)
    # The model takes rows in their own units and scores them in those units: near a Gaussian
    # fit (about 19 nats here: log 3e4 + log 50 + the rest), not hundreds of thousands.
    mean, covariance = train.mean(0), np.cov(train, rowvar=False)
    centred = test - mean
    gaussian = np.mean(
        0.5 * np.einsum("ni,ij,nj->n", centred, np.linalg.inv(covariance), centred)
        + 0.5 * np.linalg.slogdet(covariance)[1]
        + np.log(2 * np.pi)
    )
    nll = _mean_nll(result.flow, test)
    assert abs(nll - gaussian) < 2.0, (nll, gaussian)
    assert result.test_nll[-1][1] == pytest.approx(nll, abs=1e-5)
    # Without standardisation the same flow starts far off in these units.
    raw = flowkit.fit(_tiny_nsf(), train, test, epochs=1, standardize=False)
    assert raw.test_nll[0][1] > 1e6


def test_fit_stops_early_and_keeps_the_best_validation_weights():
    rows = _correlated(80, seed=0)
    validation = _correlated(40, seed=2)
    result = flowkit.fit(
        _tiny_nsf(), rows, validation_data=validation, epochs=500, lr=3e-2, patience=3
    )
    assert result.stopped_early and result.epochs_completed < 500
    assert result.epochs_completed == result.best["epoch"] + 3
    assert result.best["validation"] == min(value for _, value in result.validation_history)
    # The returned model holds the best evaluation's weights, not the last ones.
    assert _mean_nll(result.flow, validation) == pytest.approx(result.best["validation"], abs=1e-6)


def test_patience_without_a_validation_set_is_refused(tmp_path):
    config = TrainConfig(output=str(tmp_path), patience=3, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="patience=3.*validation"):
        Trainer(_tiny_nsf(), config, torch.randn(64, 2))
