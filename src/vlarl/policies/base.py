"""What the trainer, evaluation and rollout code may use of a policy: ``VLAPolicy``, ``Sampling``, ``ActOutput``.

Shapes: B envs (or learner rows), K chunk length (actions per decision, ``policy.chunk_len``; 1 for
single-step policies), A action dims. A policy family (a folder under ``policies/``) implements the
protocol, on a ``torch.nn.Module``; nothing outside ``policies/`` reads a family's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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

    actions: np.ndarray  # [B, K, A] env actions (un-normalised), run open-loop by ``VectorEnv.step_chunk``
    tokens: torch.Tensor  # [B, K, A] int64 sampled token ids
    logprob: torch.Tensor  # [B, K, A] per-token log-probs at the sampling temperature (sum over A: the action's)
    value: torch.Tensor | None  # [B, K] V before each env step of the chunk ([:, 0]: this observation's), or None
    inputs: dict[str, torch.Tensor]  # the model inputs, for the learner
    chain: torch.Tensor | None = None  # [B, N+1, K, A] a flow policy's denoising chain (what its learner scores)
    denoise_step: torch.Tensor | None = None  # [B] the chain's one stochastic step (one-step log-probs), else None


@runtime_checkable
class VLAPolicy(Protocol):
    """A VLA as an RL policy: batched rollout ``act`` and the learner's teacher-forced ``evaluate``."""

    action_dim: int
    chunk_len: int

    @property
    def device(self) -> torch.device: ...

    def prepare(self, obs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Env observations (image, instruction, proprio rows) -> model inputs."""

    def act(
        self, obs: dict[str, Any], sampling: Sampling = SAMPLE, generator: torch.Generator | None = None
    ) -> ActOutput:
        """One batched decision for B envs."""

    def evaluate(
        self,
        inputs: dict[str, torch.Tensor],
        tokens: torch.Tensor,
        temperature: float = 1.0,
        chain: torch.Tensor | None = None,
        denoise_step: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The learner's pass over what ``act`` drew, ``tokens [B, K, A]`` (and a flow policy's ``chain [B, N+1, K,
        A]`` and ``denoise_step [B]``, -1 where every step was stochastic): log-probs and entropies ``[B, K, A]`` at
        ``temperature``, values ``[B, K]`` (V before each env step of the chunk; zeros without a value head)."""

    def sft_loss(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Supervised loss on demonstration ``targets [B, K, A]`` (from ``encode_actions``); returns (loss, metrics)."""

    def encode_actions(self, env_actions: np.ndarray) -> torch.Tensor:
        """Env actions ``[B, K, A]`` -> SFT targets ``[B, K, A]``: token ids, or a continuous head's normalised
        actions."""

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """Trainable parameters by optimizer group: ``policy`` and ``value`` (value head and any critic)."""

    def freeze_vision(self) -> None:
        """Stop training the vision encoder(s)."""

    def save(self, path: str | Path) -> None:
        """Write the policy to folder ``path`` in its family's checkpoint layout (adapters merged); the family's
        builder loads it back (``policy.checkpoint=<path>``)."""

    def load(self, path: str | Path) -> None:
        """Set this policy's weights from a folder ``save`` wrote (same architecture), bit-exact."""
