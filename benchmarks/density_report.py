"""Markdown report of a density benchmark run: per-library results and flowkit against each peer.

Every number printed comes from a record of the same run; a missing or failed measurement prints
as ``-``, and failures, non-finite losses, parameter counts off by more than the tolerance and
data that differ between libraries are listed under "Failed or suspect measurements".
"""

from __future__ import annotations

import datetime
import statistics
from typing import Any

from benchmarks.report import MISSING, Records, _fmt, _table, device_description, git_commit

__all__ = ["PARAMETER_TOLERANCE", "render_density"]

# Peers' hidden widths are chosen so that their parameter count is within this fraction of
# flowkit's; a larger gap is reported as suspect.
PARAMETER_TOLERANCE = 0.05


def _group(records: Records, **where: Any) -> list[dict[str, Any]]:
    """The successful records matching ``where``, one per seed."""
    return [
        record
        for record in records.ok
        if all(record["spec"].get(key) == value for key, value in where.items())
    ]


def _values(group: list[dict[str, Any]], key: str) -> list[float]:
    values = [record["result"].get(key) for record in group]
    return [float(v) for v in values if isinstance(v, (int, float))]


def _log_likelihood(group: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Mean test log-likelihood over seeds, and its spread.

    With one seed the spread is the standard error over the test set; with several it is the
    standard deviation over seeds (which also holds the training randomness).
    """
    values = _values(group, "test_log_likelihood")
    if not values or len(values) != len(group):
        return None, None
    if len(values) == 1:
        return values[0], _values(group, "test_log_likelihood_stderr")[0]
    return statistics.fmean(values), statistics.stdev(values)


def _milliseconds(group: list[dict[str, Any]]) -> float | None:
    """Median over seeds of each run's median time per step, in milliseconds."""
    seconds = _values(group, "median_step_seconds")
    return 1000 * statistics.median(seconds) if seconds else None


def _true(group: list[dict[str, Any]]) -> float | None:
    values = _values(group, "true_test_log_likelihood")
    return values[0] if values else None


def _signed(value: float | None) -> str:
    text = _fmt(value, 3)
    return text if value is None or text == MISSING or value < 0 else "+" + text


def _difference(a: float | None, b: float | None) -> str:
    return _signed(a - b) if a is not None and b is not None else MISSING


def _results_table(
    records: Records, datasets: list[str], models: list[str], libraries: list[str]
) -> str:
    rows = []
    seeds = len(records.values("seed")) or 1
    for dataset in datasets:
        for model in models:
            for library in libraries:
                group = _group(records, dataset=dataset, model=model, library=library)
                if not group:
                    continue
                first = group[0]["result"]
                mean, spread = _log_likelihood(group)
                rows.append(
                    [
                        dataset,
                        model,
                        library,
                        str(first["width"]),
                        f"{first['parameters']:,}",
                        f"{100 * first['parameter_ratio']:.1f}%",
                        f"{_fmt(mean, 4)} ± {_fmt(spread, 2)}",
                        _difference(mean, _true(group)),
                        _fmt(_milliseconds(group), 3),
                        "yes" if all(r["result"]["loss_finite"] for r in group) else "NO",
                    ]
                )
    spread = "s.e." if seeds == 1 else f"s.d. over {seeds} seeds"
    header = [
        "dataset",
        "model",
        "library",
        "hidden width",
        "parameters",
        "of flowkit's",
        f"test log-lik. (nats) ± {spread}",
        "minus true",
        "ms/step (median)",
        "loss finite",
    ]
    return _table(header, rows)


def _comparison_table(
    records: Records, datasets: list[str], models: list[str], peers: list[str]
) -> str:
    rows = []
    for dataset in datasets:
        for model in models:
            ours = _group(records, dataset=dataset, model=model, library="flowkit")
            if not ours:
                continue
            mine, _ = _log_likelihood(ours)
            row = [dataset, model, _fmt(_true(ours), 4), _fmt(mine, 4)]
            differences, ratios = [], []
            for peer in peers:
                theirs = _group(records, dataset=dataset, model=model, library=peer)
                differences.append(_difference(mine, _log_likelihood(theirs)[0]))
                mine_ms, their_ms = _milliseconds(ours), _milliseconds(theirs)
                ratios.append(_fmt(mine_ms / their_ms if mine_ms and their_ms else None, 3))
            rows.append(row + differences + ratios)
    header = ["dataset", "model", "true test log-lik.", "flowkit test log-lik."]
    header += [f"flowkit − {peer} (nats)" for peer in peers]
    header += [f"time/step flowkit / {peer}" for peer in peers]
    return _table(header, rows)


def _describe(spec: dict[str, Any]) -> str:
    keys = ("dataset", "model", "library", "seed")
    return ", ".join(f"{k}={spec[k]}" for k in keys if k in spec)


def _suspects(records: Records) -> list[str]:
    lines = [
        f"- {_describe(record.get('spec', {}))}: {record.get('error', 'unknown error')}"
        for record in records.failed
    ]
    fingerprints: dict[str, tuple[Any, Any, str]] = {}
    for record in records.ok:
        result, spec = record["result"], record["spec"]
        if not result["loss_finite"]:
            lines.append(
                f"- {_describe(spec)}: non-finite training loss at step "
                f"{result['first_non_finite_step']}"
            )
        if abs(result["parameter_ratio"] - 1) > PARAMETER_TOLERANCE:
            lines.append(
                f"- {_describe(spec)}: {result['parameters']:,} parameters against flowkit's "
                f"{result['target_parameters']:,} (off by more than "
                f"{100 * PARAMETER_TOLERANCE:.0f}%)"
            )
        data = (result["train_fingerprint"], result["test_fingerprint"], spec["library"])
        seen = fingerprints.setdefault(spec["dataset"], data)
        if seen[:2] != data[:2]:
            lines.append(
                f"- {_describe(spec)}: trained or tested on other data than {seen[2]} "
                f"(fingerprints {data[:2]} against {seen[:2]})"
            )
    if not lines:
        return ""
    return "\n".join(["### Failed or suspect measurements", ""] + lines)


def render_density(
    records_list: list[dict[str, Any]],
    *,
    datasets: list[str],
    models: list[str],
    libraries: list[str],
    settings: dict[str, Any],
    command: str,
    root: str,
    notes: list[str],
) -> str:
    """The Markdown report of one density benchmark run."""
    records = Records(records_list)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    peers = [library for library in libraries if library != "flowkit"]
    described = ", ".join(f"{key} {value}" for key, value in settings.items())
    parts = [
        f"## Density estimation, {now}, commit {git_commit(root)}",
        "Command: `" + command + "`",
        "\n".join(device_description(records)),
        f"Settings: {described}.",
    ]
    parts += [f"Note: {note}" for note in notes]
    parts.append(_results_table(records, datasets, models, libraries))
    if peers:
        parts.append(
            "flowkit against each peer: test log-likelihood differences (above 0: flowkit fits "
            "the test set better) and ratios of the median time per training step (below 1: "
            "flowkit is faster).\n\n" + _comparison_table(records, datasets, models, peers)
        )
    parts.append(_suspects(records))
    parts.append(
        "Log-likelihoods are means over the test set, in nats per point, of the original "
        "(unstandardised) data; true is the closed-form log-density of the generator where it "
        "has one (two moons has none). With one seed, ± is the standard error of the mean over "
        "the test set and says nothing of the training randomness: run several `--seeds` before "
        "reading much into differences of a few hundredths of a nat. Peers' hidden widths are "
        "chosen so that their trainable parameter count (masked MADE weights included, as every "
        "library stores them) is closest to flowkit's preset."
    )
    return "\n\n".join(p for p in parts if p) + "\n"
