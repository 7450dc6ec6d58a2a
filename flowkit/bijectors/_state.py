"""Keep the state of a bijector's helper modules at the bijector's own level of the state dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

__all__ = ["flatten_state_of"]


class _DropChildPrefix:
    """State-dict hook: ``prefix + name + "." + key`` becomes ``prefix + key``."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def __call__(self, module: nn.Module, state_dict: dict, prefix: str, metadata: Any) -> None:
        for name in self.names:
            inner = f"{prefix}{name}."
            for key in [k for k in state_dict if k.startswith(inner)]:
                state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)


class _RestoreChildPrefix:
    """Load pre-hook: the inverse of :class:`_DropChildPrefix`, for the keys the children own."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def __call__(self, module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        for name in self.names:
            for key in getattr(module, name).state_dict(keep_vars=True):
                flat, nested = prefix + key, f"{prefix}{name}.{key}"
                if flat in state_dict and nested not in state_dict:
                    state_dict[nested] = state_dict.pop(flat)


def flatten_state_of(module: nn.Module, names: Sequence[str]) -> None:
    """Save and load the state of ``module``'s children ``names`` without their name as prefix.

    Couplings and autoregressive bijectors hold their elementwise map and their split as child
    modules, while checkpoints keep, say, a coupling's ``kept_index`` and its scale function's
    ``log_scale_fn.scale`` directly under the coupling. This keeps those keys: ``state_dict`` drops
    the child's name, ``load_state_dict`` puts it back. The children's keys must not collide with
    each other or with ``module``'s own.
    """
    names = tuple(names)
    module._register_state_dict_hook(_DropChildPrefix(names))
    module._register_load_state_dict_pre_hook(_RestoreChildPrefix(names), with_module=True)
