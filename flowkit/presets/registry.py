"""The registry of model families: a name, a typed config dataclass and a builder for each.

Importing this module does not import torch: the entries name their config class and builder by
module path and resolve them on first use, so ``flowkit presets`` answers at once.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowkit.errors import FlowkitError

if TYPE_CHECKING:
    from flowkit.distributions import Dequantized, Flow

__all__ = [
    "MODELS",
    "ModelEntry",
    "PresetError",
    "build_model",
    "config_from_dict",
    "config_from_stored",
    "config_to_dict",
    "get_model",
    "register_model",
]


class PresetError(FlowkitError, ValueError):
    """An unknown model family or preset, or a config that does not fit it."""


@dataclass(frozen=True)
class ModelEntry:
    """One model family.

    Attributes:
        name: The registered name (``"glow"``, ``"nsf"``, ...).
        kind: ``"image"`` (trained in bits/dim on uint8 images) or ``"vector"`` (nats per example).
        module: The module holding the config class and the builder.
        config_name: The frozen config dataclass's name in ``module``.
        builder_name: The builder's name in ``module``: ``builder(config) -> Flow`` (or a
            ``Dequantized`` model over integer images).
        description: One line for listings.
    """

    name: str
    kind: str
    module: str
    config_name: str
    builder_name: str
    description: str = ""

    @property
    def config_class(self) -> type:
        """The config dataclass (imports its module)."""
        return getattr(importlib.import_module(self.module), self.config_name)

    def build(self, config: Any) -> Flow | Dequantized:
        """Build the flow described by ``config`` (an instance of :attr:`config_class`)."""
        if not isinstance(config, self.config_class):
            raise PresetError(
                f"model {self.name!r} expects a {self.config_name}, got {type(config).__name__}"
            )
        builder: Callable[[Any], Flow] = getattr(
            importlib.import_module(self.module), self.builder_name
        )
        return builder(config)


MODELS: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a model family, so checkpoints naming it can be rebuilt by :func:`flowkit.load`."""
    if entry.kind not in ("image", "vector"):
        raise PresetError(f"model kind must be 'image' or 'vector', got {entry.kind!r}")
    MODELS[entry.name] = entry
    return entry


for _entry in (
    ModelEntry(
        "glow",
        "image",
        "flowkit.presets.glow",
        "GlowConfig",
        "build_glow",
        "Glow (Kingma & Dhariwal 2018)",
    ),
    ModelEntry(
        "realnvp",
        "image",
        "flowkit.presets.realnvp",
        "RealNVPConfig",
        "build_realnvp",
        "RealNVP's multi-scale image flow (Dinh et al. 2017)",
    ),
    ModelEntry(
        "flowpp",
        "image",
        "flowkit.presets.flowpp",
        "FlowPPConfig",
        "build_flowpp",
        "Flow++: logistic-mixture couplings, conv-attn networks, learned dequantization "
        "(Ho et al. 2019)",
    ),
    ModelEntry(
        "tarflow",
        "image",
        "flowkit.presets.tarflow",
        "TarFlowConfig",
        "build_tarflow",
        "TarFlow: causal transformer flows on image patches (Zhai et al. 2025)",
    ),
    ModelEntry(
        "realnvp-tabular",
        "vector",
        "flowkit.presets.tabular",
        "RealNVPTabularConfig",
        "build_realnvp_tabular",
        "RealNVP couplings for vectors",
    ),
    ModelEntry(
        "maf",
        "vector",
        "flowkit.presets.vector",
        "MAFConfig",
        "build_maf",
        "Masked autoregressive flow (Papamakarios et al. 2017)",
    ),
    ModelEntry(
        "nsf",
        "vector",
        "flowkit.presets.vector",
        "NSFConfig",
        "build_nsf",
        "Neural spline flow (Durkan et al. 2019)",
    ),
    ModelEntry(
        "naf",
        "vector",
        "flowkit.presets.neural",
        "NAFConfig",
        "build_naf",
        "Neural autoregressive flow, deep (dense) sigmoidal transformers (Huang et al. 2018)",
    ),
    ModelEntry(
        "umnn",
        "vector",
        "flowkit.presets.neural",
        "UMNNConfig",
        "build_umnn",
        "Unconstrained monotonic neural networks (Wehenkel & Louppe 2019)",
    ),
    ModelEntry(
        "ncsf",
        "vector",
        "flowkit.presets.circular",
        "NCSFConfig",
        "build_ncsf",
        "Neural circular spline flow for angles on the torus (Rezende et al. 2020)",
    ),
    ModelEntry(
        "resflow",
        "vector",
        "flowkit.presets.resflow",
        "ResFlowConfig",
        "build_resflow",
        "Residual flow: invertible residual blocks (Chen et al. 2019)",
    ),
    ModelEntry(
        "cnf",
        "vector",
        "flowkit.presets.cnf",
        "CNFConfig",
        "build_cnf",
        "Continuous normalizing flow (FFJORD), by maximum likelihood or flow matching",
    ),
):
    register_model(_entry)


def get_model(name: str) -> ModelEntry:
    """The model family called ``name``; the error lists the known ones."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise PresetError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"
        ) from None


def config_from_dict(name: str, values: Mapping[str, Any]) -> Any:
    """The config of model ``name`` from plain values (as stored in checkpoints and config.json).

    Lists become tuples where the field is a tuple; unknown fields and bad values raise a
    :class:`PresetError` naming them, before anything is built.
    """
    entry = get_model(name)
    config_class = entry.config_class
    if not isinstance(values, Mapping):
        raise PresetError(f"the {name} config must be a mapping, got {type(values).__name__}")
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise PresetError(f"unknown {name} setting(s) {unknown}; known: {sorted(fields)}")
    converted = {
        key: tuple(value) if isinstance(value, list) else value for key, value in values.items()
    }
    try:
        return config_class(**converted)
    except FlowkitError:
        raise
    except (TypeError, ValueError) as error:
        raise PresetError(f"invalid {name} settings: {error}") from None


def config_from_stored(name: str, values: Mapping[str, Any]) -> Any:
    """The config of a model stored in a checkpoint, possibly by an earlier flowkit.

    As :func:`config_from_dict`, except that a field the stored values lack takes the config
    class's ``STORED_DEFAULTS`` entry when it has one: the setting models were built with before
    that field existed (a config written since holds every field).
    """
    config_class = get_model(name).config_class
    stored_defaults: Mapping[str, Any] = getattr(config_class, "STORED_DEFAULTS", {})
    if isinstance(values, Mapping):
        values = {**stored_defaults, **values}
    return config_from_dict(name, values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain values (tuples as lists are fine for JSON)."""
    return dataclasses.asdict(config)


def build_model(name: str, config: Any) -> Flow | Dequantized:
    """Build model ``name`` from its config dataclass or from plain values."""
    entry = get_model(name)
    if isinstance(config, Mapping):
        config = config_from_dict(name, config)
    return entry.build(config)
