"""The learning-curve picture: one panel per entry, lines where the data are, gaps at NaN."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlarl.utils.plot import COLOURS, line_panels


def test_line_panels_draws_each_series_in_its_panel(tmp_path):
    x = [0, 1, 2, 3]
    panels = {"success": {"a": [0.1, 0.5, 0.9, np.nan]}, "return": {"b": [1.0, 2.0, 3.0, 4.0]}}
    path = line_panels(tmp_path / "curve.png", x, panels, "iteration")
    image = np.asarray(Image.open(path))
    assert image.shape == (440, 640, 3)
    top, bottom = image[:220].reshape(-1, 3), image[220:].reshape(-1, 3)
    count = lambda pixels, colour: int((pixels == colour).all(1).sum())  # noqa: E731
    assert count(top, COLOURS[0]) > 100 and count(bottom, COLOURS[0]) > 100  # each panel's first series
    assert not list(tmp_path.glob("*.tmp.png"))  # written atomically
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]  # no temporary file left beside it
