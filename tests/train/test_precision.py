"""Mixed precision, gradient accumulation and compilation in the Trainer, for every model family."""

from __future__ import annotations

import pytest
import torch

from flowkit.data import ImageData
from flowkit.distributions import Dequantized
from flowkit.presets.registry import build_model, config_from_dict, get_model
from flowkit.train import ConfigError, TrainConfig, Trainer, load_checkpoint
from tests.train.conftest import make_trainer
from tests.train.test_load import TINY


def _batch(kind: str, generator: torch.Generator):
    if kind == "image":
        return torch.randint(0, 256, (6, 1, 8, 8), generator=generator), None
    return torch.randn(6, 3, generator=generator), torch.randn(6, 2, generator=generator)


def _log_prob(model, data, context, noise):
    if isinstance(model, Dequantized):
        return model.latent_and_log_prob(data, context, noise=noise)[1]
    return model.log_prob(data, context)


def _fit_nsf(output, test_rows: int = 0, **settings):
    """Train the tiny conditional NSF on 64 seeded rows (and score ``test_rows`` more)."""
    torch.manual_seed(0)
    model = build_model("nsf", config_from_dict("nsf", TINY["nsf"]))
    generator = torch.Generator().manual_seed(0)
    rows = 64 + test_rows
    values, context = (
        torch.randn(rows, 3, generator=generator),
        torch.randn(rows, 2, generator=generator),
    )
    train, test = (values[:64], context[:64]), (values[64:], context[64:])
    defaults = dict(batch_size=16, max_steps=3, epochs=1, warmup_epochs=0.0, progress=False)
    config = TrainConfig(output=str(output), device="cpu", **{**defaults, **settings})
    return Trainer(model, config, train, test if test_rows else None).fit()


@pytest.mark.parametrize("name", sorted(TINY))
def test_under_bfloat16_autocast_every_family_scores_in_float32(name):
    # The networks compute in bfloat16; the flow stream, its log-determinants and the density
    # must stay float32, and differ from the float32 density only by the networks' rounding.
    entry = get_model(name)
    torch.manual_seed(0)
    model = build_model(name, config_from_dict(name, TINY[name])).eval()
    if entry.kind == "image" and not isinstance(model, Dequantized):
        model = Dequantized(model)  # the 8-bit discrete model a trainer scores
    generator = torch.Generator().manual_seed(1)
    data, context = _batch(entry.kind, generator)
    noise = torch.rand(data.shape, generator=generator)
    with torch.no_grad():
        full = _log_prob(model, data, context, noise)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = _log_prob(model, data, context, noise)
    assert full.dtype == half.dtype == torch.float32
    assert torch.isfinite(half).all()
    # bfloat16 keeps 8 bits of mantissa: the networks' outputs move by about 0.4 %.
    assert torch.allclose(half, full, rtol=0.02, atol=0.05 * full.abs().mean().item())


@pytest.mark.parametrize("name", ["glow", "flowpp", "tarflow", "nsf", "cnf", "resflow"])
def test_two_bfloat16_steps_keep_float32_weights_and_a_finite_loss(name, tmp_path):
    entry = get_model(name)
    torch.manual_seed(0)
    model = build_model(name, config_from_dict(name, TINY[name]))
    generator = torch.Generator().manual_seed(0)
    if entry.kind == "image":
        images = torch.randint(0, 256, (32, 1, 8, 8), generator=generator, dtype=torch.uint8)
        train = ImageData(images, None, "random")
    else:
        train = (torch.randn(32, 3, generator=generator), torch.randn(32, 2, generator=generator))
    config = TrainConfig(
        output=str(tmp_path),
        batch_size=8,
        init_batch_size=16,
        max_steps=2,
        epochs=1,
        precision="bfloat16",
        grad_accumulation=2,
        progress=False,
        device="cpu",
        warmup_epochs=0.0,
        ema=False,
        sample_every=100,
    )
    before = {key: value.clone() for key, value in model.state_dict().items()}
    result = Trainer(model, config, train).fit()
    assert result.steps == 2
    assert all(torch.isfinite(torch.tensor(loss)) for loss in result.train_losses)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    floats = [key for key, value in saved.items() if value.is_floating_point()]
    assert floats and all(saved[key].dtype == before[key].dtype for key in floats)
    assert any(not torch.equal(saved[key], before[key]) for key in floats)


def test_gradient_accumulation_gives_the_update_of_the_whole_batch(tmp_path):
    # Vector data draw no noise, so two micro-batches of 8 must step as one batch of 16 does,
    # up to the order of float32 sums.
    def run(accumulation, output):
        settings = dict(grad_accumulation=accumulation, optimizer="adam", ema=False)
        result = _fit_nsf(output, **settings)
        return result, load_checkpoint(output / "checkpoint.pt")["model"]

    whole, whole_weights = run(1, tmp_path / "whole")
    split, split_weights = run(2, tmp_path / "split")
    assert split.train_losses == pytest.approx(whole.train_losses, rel=1e-5)
    for key, value in whole_weights.items():
        assert torch.allclose(split_weights[key], value, rtol=1e-4, atol=1e-5), key
    # A third of the batch is not a whole micro-batch: refused, naming both numbers.
    with pytest.raises(ConfigError, match="batch_size 16 must be divisible by grad_accumulation"):
        run(3, tmp_path / "odd")


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_resume_is_bit_exact_under_reduced_precision_and_accumulation(
    precision, blobs, tiny_model_config, tmp_path
):
    train, test = blobs
    settings = dict(epochs=1, precision=precision, grad_accumulation=2, sample_every=100)
    whole = make_trainer(tiny_model_config, train, test, tmp_path / "whole", **settings).fit()
    first = make_trainer(
        tiny_model_config, train, test, tmp_path / "split", max_steps=3, **settings
    ).fit()
    second = make_trainer(tiny_model_config, train, test, tmp_path / "split", **settings).fit(
        resume=True
    )
    assert first.train_losses + second.train_losses == whole.train_losses
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    # float16 keeps its loss scale in the checkpoint; bfloat16 needs none.
    assert (a["grad_scaler"] is not None) == (precision == "float16")
    assert a["grad_scaler"] == b["grad_scaler"]


def test_a_changed_precision_is_refused_on_resume(blobs, tiny_model_config, tmp_path):
    train, test = blobs
    make_trainer(tiny_model_config, train, test, tmp_path, epochs=1, max_steps=2).fit()
    resumed = make_trainer(tiny_model_config, train, test, tmp_path, epochs=1, precision="bfloat16")
    with pytest.raises(Exception, match="precision"):
        resumed.fit(resume=True)


def test_precision_names_are_checked():
    with pytest.raises(ConfigError, match="precision in .*'float16'.*got 'half'"):
        TrainConfig(precision="half")
    with pytest.raises(ConfigError, match="grad_accumulation"):
        TrainConfig(grad_accumulation=0)


def test_compiled_training_matches_eager_training(tmp_path, monkeypatch):
    # torch.compile traces the objective with dynamo; the eager backend keeps the test fast while
    # the trace, the guards and the compiled call still run.
    real_compile = torch.compile
    calls = []

    def compile_eagerly(model, **kwargs):
        calls.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", compile_eagerly)

    def run(compile_, output):
        return _fit_nsf(output, compile=compile_).train_losses

    eager = run(False, tmp_path / "eager")
    assert not calls
    compiled = run(True, tmp_path / "compiled")
    assert len(calls) == 1
    assert compiled == pytest.approx(eager, rel=1e-5)


@pytest.mark.parametrize("native", [True, False])
def test_half_precision_on_a_cpu_without_its_instructions_warns(monkeypatch, native):
    import warnings

    from flowkit.train import step

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step.MixedPrecision("bfloat16", torch.device("cpu"))
        step.MixedPrecision("float32", torch.device("cpu"))
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == (0 if native else 1)
    assert native or "no native bfloat16" in messages[0]


def test_a_step_limit_at_an_epoch_end_still_evaluates_the_last_state(tmp_path):
    # eval_every skips epochs 1 and 2; the limit ends the run at the end of epoch 2, whose state
    # is the run's result and must be scored.
    result = _fit_nsf(tmp_path, test_rows=16, epochs=10, max_steps=8, eval_every=3)
    assert result.steps == 8
    assert [step for step, _ in result.test_nll] == [0, 8]
