"""OpenVLA's action tokenizer and action (un)normalisation.

Each action dim is clipped to [-1, 1] and discretised with 256 uniform bin *edges* over [-1, 1]
(``np.digitize``, giving bins 1..256); the token id is ``vocab_size - bin``, where ``vocab_size`` is
the text tokenizer's size (32000 for Llama-2, not the padded embedding size), so actions use the
last 256 ids. Decoding maps an id to ``bin_centers[clip(vocab_size - id - 1, 0, 254)]`` (255
centres between the 256 edges). Normalised actions relate to env actions through per-dim
q01/q99 statistics: ``env = 0.5 * (a + 1) * (q99 - q01) + q01`` where ``mask`` is true, else ``a``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ActionTokenizer:
    def __init__(self, vocab_size: int, n_bins: int = 256, low: float = -1.0, high: float = 1.0):
        self.vocab_size, self.n_bins, self.low, self.high = vocab_size, n_bins, low, high
        self.bins = np.linspace(low, high, n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0

    @property
    def first_id(self) -> int:
        """The smallest action token id (``vocab_size - n_bins``)."""
        return self.vocab_size - self.n_bins

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions ``[..., A]`` (float) -> token ids ``[..., A]`` (int64)."""
        clipped = np.clip(np.asarray(actions, dtype=np.float64), self.low, self.high)
        return (self.vocab_size - np.digitize(clipped, self.bins)).astype(np.int64)

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids ``[..., A]`` -> normalised actions ``[..., A]`` (bin centres, float32)."""
        idx = np.clip(self.vocab_size - np.asarray(token_ids, dtype=np.int64) - 1, 0, len(self.bin_centers) - 1)
        return self.bin_centers[idx].astype(np.float32)


@dataclass
class ActionNormStats:
    """Per-dim q01/q99 and the mask of dims that are normalised (OpenVLA ``norm_stats[key]['action']``)."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray
    bounded = True  # normalised actions lie in [-1, 1] (MEAN_STD statistics, as LeRobot's, are not bounded)

    @classmethod
    def from_actions(cls, actions: np.ndarray, mask: np.ndarray | None = None) -> ActionNormStats:
        """Statistics of env actions ``[N, A]``; dims with a zero range are left unnormalised."""
        q01, q99 = np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0)
        if mask is None:
            mask = (q99 - q01) > 1e-8
        return cls(q01.astype(np.float32), q99.astype(np.float32), np.asarray(mask, bool))

    @classmethod
    def identity(cls, dim: int) -> ActionNormStats:
        return cls(-np.ones(dim, np.float32), np.ones(dim, np.float32), np.zeros(dim, bool))

    @classmethod
    def from_dict(cls, d: dict) -> ActionNormStats:
        """OpenVLA's ``norm_stats[key]["action"]`` layout; no ``mask`` means every dim is normalised, as in OpenVLA."""
        q01, q99 = np.asarray(d["q01"], np.float32), np.asarray(d["q99"], np.float32)
        return cls(q01, q99, np.asarray(d["mask"], bool) if "mask" in d else np.ones(q01.shape, bool))

    def to_dict(self) -> dict:
        return {"q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()}

    def normalize(self, env_actions: np.ndarray) -> np.ndarray:
        """Env actions -> [-1, 1] model actions (clipped)."""
        scaled = 2.0 * (env_actions - self.q01) / np.maximum(self.q99 - self.q01, 1e-8) - 1.0
        return np.clip(np.where(self.mask, scaled, env_actions), -1.0, 1.0).astype(np.float32)

    def unnormalize(self, actions: np.ndarray) -> np.ndarray:
        """Model actions in [-1, 1] -> env actions."""
        env = 0.5 * (actions + 1.0) * (self.q99 - self.q01) + self.q01
        return np.where(self.mask, env, actions).astype(np.float32)
