"""presets.cnf: its config, the training-loss hook (RNODE, flow matching, OT-CFM) and fitting."""

from __future__ import annotations

import pytest
import torch

import flowkit
from flowkit.bijectors import ot_pairing
from flowkit.data.toy import two_moons
from flowkit.distributions.standardized import StandardizedFlow
from flowkit.presets import CNFConfig, build_model, cnf

# Fast settings: a fixed-step solver, a narrow field.
FAST = dict(hidden_features=(16,), method="rk4", step_size=0.25, seed=0)


def test_registered_family_builds_from_plain_values():
    flow = build_model("cnf", {"features": 3, "objective": "flow_matching", **FAST})
    assert flow.config == CNFConfig(3, objective="flow_matching", **FAST)
    assert flow.log_prob(torch.randn(4, 3)).shape == (4,)


@pytest.mark.parametrize(
    "options, fragment",
    [
        (dict(objective="score"), "objective"),
        (dict(objective="flow_matching", kinetic_weight=0.1), "flow matching solves none"),
        (dict(sigma_min=1.0), "sigma_min"),
        (
            dict(objective="flow_matching", coupling="sinkhorn"),
            r"coupling in \('independent', 'ot'\), got 'sinkhorn'",
        ),
        (dict(coupling="ot"), "objective='flow_matching' or coupling='independent'"),
        (dict(trace="approximate"), "trace"),
    ],
)
def test_bad_settings_are_named(options, fragment):
    with pytest.raises(ValueError, match=fragment):
        CNFConfig(2, **options)


def test_penalised_likelihood_keeps_the_exact_nll_through_standardisation():
    inner = cnf(2, kinetic_weight=0.5, jacobian_weight=0.25, **FAST).double()
    flow = StandardizedFlow(inner, [1.0, -2.0], [2.0, 0.5])
    x = torch.randn(8, 2, dtype=torch.float64) + torch.tensor([1.0, -2.0], dtype=torch.float64)
    torch.manual_seed(0)
    replaced = flow.training_loss(x, None)
    assert replaced is not None and replaced.nll is not None
    # The NLL is the model's own, in the data's units; the loss adds the weighted penalties.
    torch.testing.assert_close(replaced.nll, -flow.log_prob(x))
    kinetic = replaced.metrics["kinetic_energy"]
    jacobian = replaced.metrics["jacobian_frobenius"]
    assert bool((kinetic > 0).all()) and bool((jacobian > 0).all())
    expected = replaced.nll.mean() + 0.5 * kinetic.mean() + 0.25 * jacobian.mean()
    torch.testing.assert_close(replaced.loss, expected)
    # Without penalties the hook leaves the likelihood to the trainer.
    assert cnf(2, **FAST).training_loss(x.float(), None) is None


def test_flow_matching_fit_lowers_the_exact_test_nll():
    generator = torch.Generator().manual_seed(0)
    train = two_moons(1024, generator=generator)
    test = two_moons(256, generator=generator)
    # A softplus field starts far from the data (2.3 nats), so two dozen steps show the drop
    # clearly; the ELU default starts near 1.9 and needs thousands (benchmarks/continuous.py).
    settings = {**FAST, "hidden_features": (32, 32), "activation": "softplus"}
    flow = cnf(2, objective="flow_matching", **settings)
    result = flowkit.fit(flow, train, test, epochs=6, lr=1e-2, val_fraction=0.0)
    # Training logs the flow-matching loss; evaluation solves the ODE for the likelihood.
    start, end = result.test_history[0][1], result.test_history[-1][1]
    assert end < start - 0.3, result.test_history
    assert result.flow.log_prob(test).mean().neg().item() == pytest.approx(end, abs=1e-4)


def test_a_cnf_stored_before_the_activation_setting_rebuilds_its_softplus_field():
    from flowkit.presets.registry import config_from_stored, config_to_dict

    earlier_config = CNFConfig(2, activation="softplus", **FAST)
    earlier = build_model("cnf", earlier_config)
    stored = config_to_dict(earlier_config)
    del stored["activation"]
    config = config_from_stored("cnf", stored)
    assert config.activation == "softplus"
    rebuilt = build_model("cnf", config)
    rebuilt.load_state_dict(earlier.state_dict())
    x = torch.randn(5, 2)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.log_prob(x), earlier.log_prob(x), rtol=0, atol=0)
        # The weights alone do not say which activation: the ELU field is another function.
        elu = build_model("cnf", CNFConfig(2, **FAST))
        elu.load_state_dict(earlier.state_dict())
        assert not torch.allclose(elu.log_prob(x), earlier.log_prob(x))
    assert config_from_stored("cnf", config_to_dict(CNFConfig(2, **FAST))).activation == "elu"
    with pytest.raises(ValueError, match="activation"):
        CNFConfig(2, activation="relu6")


def test_ot_coupling_re_pairs_the_noise_and_keeps_the_context_with_its_row():
    settings = dict(context_features=1, objective="flow_matching", **FAST)
    paired = cnf(2, coupling="ot", **settings)
    independent = cnf(2, **settings)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(16, 2, generator=generator)
    context = torch.randn(16, 1, generator=generator)

    def loss(flow):
        torch.manual_seed(2)
        replaced = flow.training_loss(x, context)
        assert replaced is not None
        return replaced.metrics["flow_matching"]

    def expected(flow, pairing):
        # The hook draws the noise, pairs it with the rows, then the loss draws the time.
        torch.manual_seed(2)
        noise = torch.randn_like(x)
        return flow.bijector.flow_matching_loss(x, pairing(x, noise), context)

    # Both flows have the same weights (one seed): only the pairing differs.
    torch.testing.assert_close(loss(paired), expected(paired, ot_pairing))
    torch.testing.assert_close(loss(independent), expected(independent, lambda x, noise: noise))
    assert not torch.allclose(loss(paired), loss(independent))


def test_ot_coupled_flow_matching_fit_lowers_the_exact_test_nll():
    generator = torch.Generator().manual_seed(0)
    train = two_moons(512, generator=generator)
    test = two_moons(128, generator=generator)
    settings = {**FAST, "hidden_features": (32, 32), "activation": "softplus"}
    flow = cnf(2, objective="flow_matching", coupling="ot", **settings)
    result = flowkit.fit(flow, train, test, epochs=2, batch_size=64, lr=1e-2, val_fraction=0.0)
    # Sixteen steps on paired batches take the exact test NLL from about 2.3 nats to below 2.
    start, end = result.test_history[0][1], result.test_history[-1][1]
    assert end < start - 0.25, result.test_history


def test_a_cnf_stored_before_the_coupling_setting_rebuilds_independent_pairs():
    from flowkit.presets.registry import config_from_stored, config_to_dict

    stored = config_to_dict(CNFConfig(2, objective="flow_matching", **FAST))
    del stored["coupling"]
    assert config_from_stored("cnf", stored).coupling == "independent"
    ot = CNFConfig(2, objective="flow_matching", coupling="ot", **FAST)
    assert config_from_stored("cnf", config_to_dict(ot)) == ot
