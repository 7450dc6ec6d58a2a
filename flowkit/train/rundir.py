"""The run directory: what a run writes, the lock that keeps one run per directory, overwriting."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from flowkit.errors import FlowkitError
from flowkit.train.checkpoint import remove_stale_temporaries

__all__ = ["RUN_DIRECTORIES", "RUN_FILES", "RunDirectory", "RunExistsError", "RunLockedError"]

# Everything a run writes; --overwrite removes exactly these, nothing else the user keeps there.
RUN_FILES = (
    "checkpoint.pt",
    "checkpoint.diverged.pt",
    "metrics.jsonl",
    "metrics.jsonl.tmp",
    "config.json",
    "bpd.png",
    "nll.png",
    "density.png",
    "samples.csv",
)
RUN_DIRECTORIES = ("samples", "tensorboard")
# The files whose presence means the directory holds a run. config.json alone is not one: it is
# written at the start, so it alone means a run that stopped before recording anything (a missing
# extra, a Ctrl-C in the first seconds), which the same command may then simply start again.
_RUN_MARKERS = ("checkpoint.pt", "metrics.jsonl")
LOCK_NAME = ".lock"


class RunExistsError(FlowkitError, FileExistsError):
    """The output directory already holds a run, and neither resuming nor overwriting was asked."""


class RunLockedError(FlowkitError, RuntimeError):
    """Another process is training into the same output directory."""


class RunDirectory:
    """One run's output directory, opened for writing by at most one process at a time.

    :meth:`open` takes an advisory lock (``fcntl.flock`` on ``.lock``; the operating system drops
    it when the process ends, however it ends), removes temporary files that interrupted
    checkpoint writes left behind, and refuses a directory that holds an earlier run unless the
    caller resumes it or asks to overwrite it (which removes the earlier run's files and samples,
    and nothing else). Resuming needs the earlier run's checkpoint: a run whose metrics or config
    remain without it is refused rather than started over. Nothing in the directory is touched
    before these checks pass.

    Args:
        path: The directory (created if missing).
        choices: How the caller spells resuming and overwriting, named in the errors
            (``("--resume", "--overwrite")`` on the command line).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        choices: tuple[str, str] = ("resume=True", "overwrite=True"),
    ) -> None:
        if str(path).strip() == "":
            raise ValueError("the output directory is empty; give a directory such as runs/my-run")
        self.path = Path(path)
        self.choices = choices
        self._lock_file: int | None = None

    @property
    def checkpoint(self) -> Path:
        """``checkpoint.pt``: the last good state."""
        return self.path / "checkpoint.pt"

    @property
    def diverged_checkpoint(self) -> Path:
        """``checkpoint.diverged.pt``: the state at which training diverged, kept for debugging."""
        return self.path / "checkpoint.diverged.pt"

    def holds_run(self) -> bool:
        """Whether an earlier run wrote its checkpoint or metrics here."""
        return any((self.path / name).exists() for name in _RUN_MARKERS)

    def open(self, *, resume: bool, overwrite: bool) -> None:
        """Lock the directory and check it; see the class docstring.

        Raises:
            RunLockedError: Another process holds the lock (its process id is named).
            RunExistsError: The directory holds a run and neither ``resume`` nor ``overwrite``,
                or ``resume`` with a run that has lost its checkpoint.
        """
        self.check(resume=resume, overwrite=overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            # Again under the lock: another process may have written a run since.
            self.check(resume=resume, overwrite=overwrite)
            remove_stale_temporaries(self.checkpoint)
            remove_stale_temporaries(self.diverged_checkpoint)
            (self.path / "metrics.jsonl.tmp").unlink(missing_ok=True)
            if overwrite:
                self.clear()
        except BaseException:
            self.close()
            raise

    def check(self, *, resume: bool, overwrite: bool) -> None:
        """Raise what :meth:`open` would about the directory's content, touching nothing.

        Lets a caller refuse before it spends time on data and models.
        """
        resume_choice, overwrite_choice = self.choices
        if resume and overwrite:
            raise ValueError(
                f"{resume_choice} and {overwrite_choice} exclude each other; choose one"
            )
        if self.path.exists() and not self.path.is_dir():
            raise RunExistsError(f"the output {self.path} is a file, not a directory")
        if not self.holds_run():
            return
        if not (resume or overwrite):
            raise RunExistsError(
                f"{self.path} already holds a run; continue it with {resume_choice} or replace "
                f"it with {overwrite_choice}"
            )
        if resume and not self.checkpoint.exists():
            # Starting afresh here would replace the run's metrics and config.
            written = ", ".join(name for name in _RUN_MARKERS if (self.path / name).exists())
            raise RunExistsError(
                f"cannot resume the run in {self.path}: it has {written} but no "
                f"{self.checkpoint.name} to continue from; replace it with {overwrite_choice} "
                "or choose another output directory"
            )

    def clear(self) -> None:
        """Remove every file and folder a run writes (and only those)."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in RUN_DIRECTORIES:
            if (self.path / name).is_dir():
                shutil.rmtree(self.path / name)

    def close(self) -> None:
        """Release the lock."""
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one run per directory is up to the user
            return
        path = self.path / LOCK_NAME
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(handle, 64).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise RunLockedError(
                f"another process (pid {holder}) is training into {self.path}; wait for it to "
                "finish or choose another --output"
            ) from None
        os.ftruncate(handle, 0)
        os.write(handle, str(os.getpid()).encode())
        self._lock_file = handle

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
