"""Learning-curve pictures drawn with Pillow (no plotting library in the default install)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vlarl.utils.io import atomic_write_bytes

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def line_panels(path: str | Path, x: list[float], panels: dict[str, dict[str, list[float]]], xlabel: str) -> Path:
    """One panel per entry of ``panels`` (title -> {series name: y values, one per ``x``}), stacked; a PNG.

    NaNs are gaps (e.g. an evaluation measured only every few iterations). Each panel is scaled to its data.
    """
    width, height, margin = 640, 220, 48
    image = Image.new("RGB", (width, height * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    xs = np.asarray(x, float)
    x_lo, x_hi = (xs.min(), xs.max()) if len(xs) else (0.0, 1.0)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1.0
    for p, (title, series) in enumerate(panels.items()):
        top = p * height
        values = np.concatenate([np.asarray(v, float) for v in series.values()]) if series else np.zeros(0)
        finite = values[np.isfinite(values)]
        y_lo, y_hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        y_hi = y_hi if y_hi > y_lo else y_lo + 1.0

        def point(xv: float, yv: float, top=top, y_lo=y_lo, y_hi=y_hi) -> tuple[float, float]:
            px = margin + (xv - x_lo) / (x_hi - x_lo) * (width - 2 * margin)
            py = top + height - margin + (y_lo - yv) / (y_hi - y_lo) * (height - 2 * margin)
            return px, py

        draw.rectangle([margin, top + margin, width - margin, top + height - margin], outline="black")
        draw.text((margin, top + 8), title, fill="black")
        draw.text((4, top + margin - 6), f"{y_hi:.3g}", fill="black")
        draw.text((4, top + height - margin - 6), f"{y_lo:.3g}", fill="black")
        draw.text((margin, top + height - margin + 6), f"{x_lo:.0f}", fill="black")
        draw.text((width - margin - 24, top + height - margin + 6), f"{x_hi:.0f} {xlabel}", fill="black")
        for s, (name, ys) in enumerate(series.items()):
            colour = COLOURS[s % len(COLOURS)]
            pts = [point(xv, yv) for xv, yv in zip(xs, np.asarray(ys, float)) if np.isfinite(yv)]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            for px, py in pts:
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
            draw.text((width - margin - 150, top + 8 + 12 * s), name, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def learning_curve(path: str | Path, history: list[dict[str, float]], evals: dict[int, float], last: int) -> Path:
    """Rollout and eval success, and return per episode, against the iteration: ``history`` holds the logged rows
    of iterations ``last - len(history) .. last - 1``, ``evals`` eval success by iteration (up to ``last``)."""
    its = list(range(last - len(history), last + 1))
    rollout = [r["rollout/success"] for r in history] + [float("nan")]
    ret = [r["env/reward"] for r in history] + [float("nan")]
    panels = {
        "success": {"rollouts": rollout, "eval": [evals.get(i, float("nan")) for i in its]},
        "return per episode": {"rollouts": ret},
    }
    return line_panels(path, its, panels, "iteration")
