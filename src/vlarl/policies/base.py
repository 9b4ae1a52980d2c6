"""What the trainer, evaluation and rollout code may use of a policy: ``VLAPolicy``, ``Sampling``, ``ActOutput``.

Shapes: B envs (or learner rows), A action dims. A policy family (a folder under ``policies/``) implements
the protocol; nothing outside ``policies/`` reads a family's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class Sampling:
    """How ``act`` picks action tokens: ``greedy`` (argmax), or a draw from the distribution at ``temperature``
    restricted to the ``top_k`` most likely tokens (0: all) within nucleus mass ``top_p`` (1: all).

    Log-probs are those of the tempered distribution (top-k/top-p shape the draw, not the log-prob), so the
    learner scores a rollout with ``evaluate(..., temperature)``.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False


SAMPLE = Sampling()  # a plain draw at temperature 1
GREEDY = Sampling(greedy=True)


@dataclass
class ActOutput:
    """Rollout output for B envs and A action dims."""

    actions: np.ndarray  # [B, A] env actions (un-normalised)
    tokens: torch.Tensor  # [B, A] int64 sampled token ids
    logprob: torch.Tensor  # [B, A] per-token log-probs at the sampling temperature (sum over A: the action's)
    value: torch.Tensor  # [B]
    inputs: dict[str, torch.Tensor]  # the model inputs, for the learner


@runtime_checkable
class VLAPolicy(Protocol):
    """A VLA as an RL policy: batched rollout ``act`` and the learner's teacher-forced ``evaluate``."""

    action_dim: int

    @property
    def device(self) -> torch.device: ...

    def prepare(self, obs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Env observations (image, instruction, proprio rows) -> model inputs."""

    def act(
        self, obs: dict[str, Any], sampling: Sampling = SAMPLE, generator: torch.Generator | None = None
    ) -> ActOutput:
        """One batched decision for B envs."""

    def evaluate(
        self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs ``[B, A]`` and entropies ``[B, A]`` at ``temperature``, values ``[B]``."""

    def sft_loss(self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Supervised loss on demonstration ``tokens``; returns (loss, metrics)."""

    def encode_actions(self, env_actions: np.ndarray) -> torch.Tensor:
        """Env actions ``[B, A]`` -> target tokens ``[B, A]``."""
