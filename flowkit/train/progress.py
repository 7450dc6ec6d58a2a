"""A run's progress: a tqdm bar on a terminal, and one line per epoch that a log can keep."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["Progress"]


class Progress:
    """What the Trainer shows while it trains: the running loss and the last evaluations.

    On a terminal a tqdm bar is redrawn in place, its postfix the running training loss and the
    last test (and validation) value. Every epoch also ends with one line,
    ``epoch 3/10 (step 120): train nll 1.2345, val nll 1.3012, test nll 1.3100 (2.1 s)``,
    written once the epoch's evaluation is known, so a log (stderr not a terminal) holds one line
    per epoch and no carriage-return frames.

    Args:
        key: The objective's short name, ``"bpd"`` or ``"nll"``.
        epochs: The run's number of epochs.
        enabled: Show anything at all (False under ``progress=False`` and on processes other
            than the first).
        interactive: Draw the bar; None: when ``stream`` is a terminal.
        stream: Where the bar and the lines go (default: stderr).
    """

    def __init__(
        self,
        key: str,
        epochs: int,
        *,
        enabled: bool = True,
        interactive: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.key = key
        self.epochs = epochs
        self.enabled = enabled
        self.stream = stream
        if interactive is None:
            target = sys.stderr if stream is None else stream
            interactive = bool(getattr(target, "isatty", lambda: False)())
        self.interactive = interactive
        self.last: dict[str, float] = {}
        self._bar: Any = None
        self._losses: list[float] = []
        self._pending: tuple[str, float] | None = None
        self._epoch = 0
        self._step = self._first_step = 0
        self._started = time.monotonic()

    def start_epoch(self, epoch: int, total: int, initial: int, step: int) -> Progress:
        """Begin epoch ``epoch`` (0-based) of ``total`` batches, ``initial`` of them done."""
        self._flush()
        self._epoch, self._step, self._first_step = epoch, step, step
        self._losses = []
        self._started = time.monotonic()
        if self.enabled and self.interactive:
            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                leave=False,
                file=self.stream,
            )
            self._show()
            self._bar.refresh()
        return self

    def loss(self, value: float) -> None:
        """The training loss of an applied step."""
        self._losses.append(value)

    def update(self, steps: int = 1) -> None:
        """``steps`` more steps done (applied or skipped)."""
        self._step += steps
        if self._bar is not None:
            self._bar.update(steps)
            self._show()

    def close(self) -> None:
        """The epoch's steps are done (or stopped); its line waits for its evaluation."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.enabled and self._pending is None and self._step > self._first_step:
            self._pending = self._line_start()

    def record(self, record: dict[str, Any]) -> None:
        """A metrics record: keeps its evaluations; an epoch's evaluation completes its line."""
        for name in (f"val_{self.key}", f"test_{self.key}"):
            value = record.get(name)
            if isinstance(value, (int, float)):
                self.last[name] = float(value)
        if record.get("event") in ("epoch", "end"):
            self._flush()

    def finish(self) -> None:
        """Write a line still waiting (an epoch that ended without an evaluation)."""
        self._flush()

    # --- internals -------------------------------------------------------------------------------
    def _running_loss(self) -> float | None:
        # The mean over the epoch so far: steady enough to read, and exactly the epoch's at its end.
        return sum(self._losses) / len(self._losses) if self._losses else None

    def _evaluations(self) -> list[str]:
        parts = []
        for name in (f"val_{self.key}", f"test_{self.key}"):
            if name in self.last:
                parts.append(f"{name.replace('_', ' ')} {_number(self.last[name])}")
        return parts

    def status(self) -> str:
        """The bar's postfix: ``loss 1.2345, val nll 1.3012, test nll 1.3100``."""
        parts = []
        loss = self._running_loss()
        if loss is not None:
            parts.append(f"loss {_number(loss)}")
        return ", ".join(parts + self._evaluations())

    def _show(self) -> None:
        self._bar.set_postfix_str(self.status(), refresh=False)

    def _line_start(self) -> tuple[str, float]:
        """The line's start (epoch, step, training loss) and the epoch's seconds."""
        loss = self._running_loss()
        train = "" if loss is None else f": train {self.key} {_number(loss)}"
        seconds = time.monotonic() - self._started
        return f"epoch {self._epoch + 1}/{self.epochs} (step {self._step}){train}", seconds

    def _flush(self) -> None:
        if self._pending is None:
            return
        head, seconds = self._pending
        self._pending = None
        parts = self._evaluations()
        separator = ", " if ":" in head else ": "
        body = (separator + ", ".join(parts)) if parts else ""
        line = f"{head}{body} ({seconds:.1f} s)"
        stream = sys.stderr if self.stream is None else self.stream
        if self.interactive:
            tqdm.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)


def _number(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else str(value)
