"""Observations the chunk-family unit tests (OFT, pi0) feed their policies: prompts of different lengths."""

import numpy as np

INSTRUCTIONS = ["reach the goal position", "push the puck", "open the drawer please now"]


def observations(b=3, seed=0):
    """``b`` rows of 64 px images, the first ``b`` instructions and 4-dim proprio."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (b, 1, 64, 64, 3), dtype=np.uint8),
        "instruction": INSTRUCTIONS[:b],
        "proprio": rng.normal(size=(b, 4)).astype(np.float32),
    }
