"""Checkpoints written atomically (temporary file, fsync, rename), read back with clear errors."""

from __future__ import annotations

import os
import pickle
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from flowkit.errors import FlowkitError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
    "versions",
]

# 1: Glow-only checkpoints (model_config tagged kind="glow"). 2: any preset or custom flow, with
# the preset's name, the data description, versions and the elapsed wall-clock time.
CHECKPOINT_FORMAT = 2
_KNOWN_FORMATS = (1, 2)


class CheckpointError(FlowkitError, ValueError):
    """A checkpoint file is missing, truncated, corrupt, foreign or describes an invalid model."""


def versions() -> dict[str, str]:
    """The flowkit, torch and Python versions, as recorded in checkpoints and config.json."""
    from flowkit._version import __version__

    return {
        "flowkit": str(__version__),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` so that a crash at any moment leaves the old file or the new one.

    The state is written to a temporary file in the same directory, flushed to disk, and renamed
    over ``path`` (an atomic replace on POSIX and Windows); the directory entry is then synced. A
    process killed mid-write leaves a ``<name>.*.tmp`` file, which :func:`remove_stale_temporaries`
    deletes at the next start.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file readable by its owner only; a checkpoint is a run file like
        # the others, so it gets the permissions the process's umask gives new files.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    if hasattr(os, "O_DIRECTORY"):
        directory = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted writes of ``path`` left behind; return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(path.name + ".*.tmp"))
    for file in stale:
        file.unlink(missing_ok=True)
    return stale


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Only tensors and plain containers are loaded (``weights_only=True``): a file holding other
    Python objects is refused, never executed.

    Raises:
        CheckpointError: Naming the file, if it is missing, truncated, corrupt, holds objects
            flowkit does not load, or lacks flowkit's entries.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory; expected a checkpoint file such as {path / 'checkpoint.pt'}"
        )
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "GLOBAL" in str(error):
            raise CheckpointError(
                f"{path} holds Python objects that flowkit does not load (only tensors and plain "
                "values are read from checkpoints); it was not written by flowkit"
            ) from error
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt (not a readable torch file)"
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, AttributeError) as error:
        if "Attempting to deserialize object on a CUDA device" in str(error):
            raise CheckpointError(
                f"{path} was saved on a GPU; load it with map_location='cpu' (CUDA is not "
                "available here)"
            ) from error
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(state, dict) or "model" not in state or "format" not in state:
        raise CheckpointError(f"{path} is not a flowkit checkpoint (no 'model'/'format' entries)")
    if state["format"] not in _KNOWN_FORMATS:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format']!r}; this flowkit reads formats "
            f"{list(_KNOWN_FORMATS)} (a newer flowkit wrote it?)"
        )
    if not isinstance(state["model"], dict):
        raise CheckpointError(f"{path} is not a flowkit checkpoint ('model' is not a state dict)")
    return state
