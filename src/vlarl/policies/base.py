"""What the trainer, evaluation and rollout code may use of a policy: ``VLAPolicy``, ``Sampling``, ``ActOutput``,
and the random streams ``act`` draws from (``EnvGenerators``, ``randn``, ``categorical``).

Shapes: B envs (or learner rows), K chunk length (actions per decision, ``policy.chunk_len``; 1 for
single-step policies), A action dims. A policy family (a folder under ``policies/``) implements the
protocol, on a ``torch.nn.Module``; nothing outside ``policies/`` reads a family's attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class EnvGenerators:
    """One random stream per env of a decision: env ``env_ids[i]``'s draws come from a generator seeded by
    (``seed``, its env id, ``decision``) alone, so they do not depend on which other envs share the batch (a
    placement splits the envs over workers and pipeline stages) nor on what was drawn before (a replayed decision
    draws the same).

    A draw of shape ``[N, ...]`` gives the i-th env rows ``i * N/E .. (i+1) * N/E - 1`` (E envs): one row each, or
    an env's K x A tokens flattened into consecutive rows. Pickles as its three numbers (generators are made where
    it is drawn from, on the device asked for).
    """

    def __init__(self, seed: int, env_ids: Sequence[int], decision: int):
        self.seed, self.env_ids, self.decision = int(seed), [int(e) for e in env_ids], int(decision)
        self._streams: dict[str, list[torch.Generator]] = {}

    def __len__(self) -> int:
        return len(self.env_ids)

    def __reduce__(self):
        return EnvGenerators, (self.seed, self.env_ids, self.decision)

    def streams(self, device: torch.device | str) -> list[torch.Generator]:
        key = str(device)
        if key not in self._streams:
            seeds = (np.random.default_rng([self.seed, e, self.decision]).integers(2**63) for e in self.env_ids)
            self._streams[key] = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        return self._streams[key]

    def draw(self, fill: str, shape: Sequence[int], device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """``shape`` filled by ``Tensor.<fill>_`` (``normal``, ``exponential``), each env's rows from its stream."""
        n, envs = shape[0], len(self.env_ids)
        if n % envs:
            raise ValueError(f"a draw of {n} rows cannot be split evenly over {envs} envs' streams")
        out = torch.empty((n, *shape[1:]), device=device, dtype=dtype)
        for rows, g in zip(out.split(n // envs), self.streams(device)):
            getattr(rows, f"{fill}_")(generator=g)
        return out


Generator = torch.Generator | EnvGenerators | None
"""What ``act`` draws from: a torch generator (one stream for the batch), per-env streams, or None (torch's global)."""


def randn(shape: Sequence[int], generator: Generator, device: torch.device | str, dtype=torch.float32) -> torch.Tensor:
    """Standard normal draws of ``shape`` from ``generator``."""
    if isinstance(generator, EnvGenerators):
        return generator.draw("normal", shape, device, dtype)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def categorical(probs: torch.Tensor, generator: Generator) -> torch.Tensor:
    """One index per row of ``probs [N, V]`` (rows sum to 1), drawn from ``generator``: ``[N]`` int64.

    Per-env streams use the exponential race ``argmax(p / E)``, E ~ Exp(1) per entry, as ``torch.multinomial``
    does for one sample, with each env's E from its own stream.
    """
    if isinstance(generator, EnvGenerators):
        race = generator.draw("exponential", probs.shape, probs.device, probs.dtype)
        return (probs / race).argmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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

    def act(self, obs: dict[str, Any], sampling: Sampling = SAMPLE, generator: Generator = None) -> ActOutput:
        """One batched decision for B envs, its random draws from ``generator`` (via ``randn`` / ``categorical``)."""

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

    def freeze_backbone(self) -> None:
        """Stop training the VLM backbone (vision, projector, language model): the family's own action module and
        the value head still learn. A family that acts through its language model refuses (ValueError)."""

    def save(self, path: str | Path) -> None:
        """Write the policy to folder ``path`` in its family's checkpoint layout (adapters merged); the family's
        builder loads it back (``policy.checkpoint=<path>``)."""

    def load(self, path: str | Path) -> None:
        """Set this policy's weights from a folder ``save`` wrote (same architecture), bit-exact."""
