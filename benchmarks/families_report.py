"""The Markdown tables of :mod:`benchmarks.families`' JSON lines (``--report``)."""

from __future__ import annotations

from typing import Any

from benchmarks.families import MODELS, best_test

__all__ = ["render"]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _numbers(values: list[float]) -> str:
    return " / ".join(f"{value:.3f}" for value in values)


def _budget(seconds: float | None, steps: int | None, eval_seconds: float | None) -> str:
    limits = [f"{seconds:g} s" if seconds is not None else "", f"{steps} steps" if steps else ""]
    every = f" and every {eval_seconds:g} s of training" if eval_seconds else ""
    return (
        f"{' or '.join(limit for limit in limits if limit)}, evaluated at steps 1, 2, 5, 10, "
        f"20, 50, ...{every}"
    )


def render(records: list[dict[str, Any]]) -> str:
    """Markdown tables of the records, one per data set (see the module docstring)."""
    lines: list[str] = []
    for data in dict.fromkeys(record["data"] for record in records):
        subset = [record for record in records if record["data"] == data]
        # Per pair and seed, the largest step at which every model of the pair was evaluated.
        common: dict[tuple[str, int], set[int]] = {}
        for record in subset:
            key = (record["pair"], record["seed"])
            evaluated = {int(entry[1]) for entry in record["history"]}
            common[key] = common[key] & evaluated if key in common else evaluated
        reached = {key: max(steps) for key, steps in common.items()}
        budgets = sorted(
            {_budget(r["seconds_limit"], r["steps_limit"], r["eval_seconds"]) for r in subset}
        )
        lines += [
            f"### {data}",
            "",
            f"Budget: {'; '.join(budgets)}. Test NLL in nats per row, in the data's units, at the "
            "best validation NLL: within the whole run (equal time), or among the evaluations "
            "at steps up to S, the last step at which every model of the pair was evaluated "
            "(equal steps).",
            "",
            "| pair | model | parameters | ms/step | steps | test NLL, equal time (per seed) "
            "| mean | S (per seed) | test NLL, equal steps (per seed) | mean |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        order = {name: index for index, name in enumerate(MODELS)}
        for model in sorted({r["model"] for r in subset}, key=lambda m: order.get(m, len(order))):
            runs = sorted((r for r in subset if r["model"] == model), key=lambda r: r["seed"])
            timed = [r["final"] for r in runs]
            limits = [reached[(r["pair"], r["seed"])] for r in runs]
            stepped = [best_test(r["history"], s) for r, s in zip(runs, limits, strict=True)]
            speeds = [r["ms_per_step"] for r in runs if r["ms_per_step"] is not None]
            speed = f"{_mean(speeds):.1f}" if speeds else "-"
            lines.append(
                f"| {runs[0]['pair']} | {model} | {runs[0]['parameters']:,} | {speed} "
                f"| {_mean([r['steps'] for r in runs]):.0f} | {_numbers(timed)} "
                f"| {_mean(timed):.3f} | {' / '.join(str(int(s)) for s in limits)} "
                f"| {_numbers(stepped)} | {_mean(stepped):.3f} |"
            )
        unfinished = [r for r in subset if not r["finite"]]
        for r in unfinished:
            lines.append(f"\n{r['model']}, seed {r['seed']}: non-finite loss at step {r['steps']}")
        lines.append("")
    return "\n".join(lines)
