"""Line plots drawn with Pillow alone: curves with shaded bands, side-by-side panels, a legend."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["COLORS", "Panel", "Series", "nice_ticks", "plot_panels"]

# A colour-blind-safe palette (Okabe & Ito), in the order series are given.
COLORS = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (0, 0, 0),
    (240, 228, 66),
)
# Opacity of a series' band (min to max over seeds) behind its line.
BAND_ALPHA = 60
# Length in pixels of a dash (and of the gap after it) of a dashed series.
DASH = 8
PANEL_SIZE = (520, 380)
MARGIN = {"left": 70, "right": 16, "top": 34, "bottom": 48}


@dataclass
class Series:
    """One curve: points ``(x[i], y[i])``, optionally a band from ``low[i]`` to ``high[i]``."""

    label: str
    x: list[float]
    y: list[float]
    low: list[float] | None = None
    high: list[float] | None = None
    dashed: bool = False


@dataclass
class Panel:
    """One set of axes."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]`` (steps of 1, 2 or 5 x 10^k)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"nice_ticks expects finite limits, got {low} and {high}")
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + 1e-9 * step:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its fixed bitmap font
        return ImageFont.load_default()


def _limits(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    pad = 0.05 * (high - low) if high > low else max(abs(low) * 0.05, 0.5)
    return low - pad, high + pad


def _format(value: float) -> str:
    return f"{value:.4g}"


def _draw_panel(image: Image.Image, origin: tuple[int, int], panel: Panel) -> None:
    draw = ImageDraw.Draw(image, "RGBA")
    font, small = _font(14), _font(12)
    left = origin[0] + MARGIN["left"]
    top = origin[1] + MARGIN["top"]
    right = origin[0] + PANEL_SIZE[0] - MARGIN["right"]
    bottom = origin[1] + PANEL_SIZE[1] - MARGIN["bottom"]
    xs = [v for s in panel.series for v in s.x]
    ys = [v for s in panel.series for v in [*s.y, *(s.low or []), *(s.high or [])]]
    x_low, x_high = _limits(xs)
    y_low, y_high = _limits(ys)

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x_low) / (x_high - x_low) * (right - left),
            bottom - (y - y_low) / (y_high - y_low) * (bottom - top),
        )

    draw.text(
        ((left + right) / 2, origin[1] + 8), panel.title, fill="black", font=font, anchor="ma"
    )
    for tick in nice_ticks(x_low, x_high):
        if x_low <= tick <= x_high:
            px = at(tick, y_low)[0]
            draw.line([(px, top), (px, bottom)], fill=(225, 225, 225))
            draw.text((px, bottom + 4), _format(tick), fill="black", font=small, anchor="ma")
    for tick in nice_ticks(y_low, y_high):
        if y_low <= tick <= y_high:
            py = at(x_low, tick)[1]
            draw.line([(left, py), (right, py)], fill=(225, 225, 225))
            draw.text((left - 4, py), _format(tick), fill="black", font=small, anchor="rm")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2, bottom + 22), panel.xlabel, fill="black", font=font, anchor="ma")
    label = Image.new("RGBA", (bottom - top, 20), (255, 255, 255, 0))
    ImageDraw.Draw(label).text(
        ((bottom - top) / 2, 10), panel.ylabel, fill="black", font=font, anchor="mm"
    )
    rotated = label.rotate(90, expand=True)
    image.paste(rotated, (origin[0] + 4, top), rotated)

    for index, series in enumerate(panel.series):
        color = COLORS[index % len(COLORS)]
        if series.low is not None and series.high is not None and len(series.x) > 1:
            outline = [at(x, h) for x, h in zip(series.x, series.high)]
            outline += [at(x, lo) for x, lo in reversed(list(zip(series.x, series.low)))]
            draw.polygon(outline, fill=(*color, BAND_ALPHA))
        points = [at(x, y) for x, y in zip(series.x, series.y) if math.isfinite(y)]
        if len(points) > 1:
            if series.dashed:
                for a, b in zip(points, points[1:]):
                    length = math.hypot(b[0] - a[0], b[1] - a[1])
                    for start in range(0, int(length), 2 * DASH):
                        t0, t1 = start / length, min(start + DASH, length) / length
                        draw.line(
                            [
                                (a[0] + t0 * (b[0] - a[0]), a[1] + t0 * (b[1] - a[1])),
                                (a[0] + t1 * (b[0] - a[0]), a[1] + t1 * (b[1] - a[1])),
                            ],
                            fill=color,
                            width=2,
                        )
            else:
                draw.line(points, fill=color, width=2, joint="curve")
        for px, py in points:
            draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=color)
    # Legend in the upper right corner, one line per series.
    for index, series in enumerate(panel.series):
        color = COLORS[index % len(COLORS)]
        y = top + 8 + 16 * index
        draw.line([(right - 170, y), (right - 150, y)], fill=color, width=3)
        draw.text((right - 145, y), series.label, fill="black", font=small, anchor="lm")


def plot_panels(path: str | os.PathLike[str], panels: list[Panel], *, columns: int = 2) -> Path:
    """Draw ``panels`` in a grid of ``columns`` into a PNG at ``path`` (folders are created)."""
    if not panels:
        raise ValueError("plot_panels expects at least one panel, got none")
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    image = Image.new("RGB", (columns * PANEL_SIZE[0], rows * PANEL_SIZE[1]), "white")
    for index, panel in enumerate(panels):
        origin = ((index % columns) * PANEL_SIZE[0], (index // columns) * PANEL_SIZE[1])
        _draw_panel(image, origin, panel)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="PNG", optimize=True)
    return target
