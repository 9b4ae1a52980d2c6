"""``Pi0Policy``: a π0-style flow-matching policy, the action expert of ``expert.py`` on the Prismatic VLM prefix.

The VLM prefix (``openvla``'s vision tower, projector and Llama over ``[BOS, patches, (proprio), prompt]``) gives
the last hidden states; the action expert attends to them and denoises a chunk ``[K, A]`` of normalised actions
from Gaussian noise in ``denoise_steps`` Euler steps (``flow.py``'s convention: t = 1 noise, t = 0 action).
Proprio enters as the Prismatic prefix's proprio token (``policy.use_proprio``).

RL log-probs (πRL): ``noise_method`` ``flow_sde`` or ``flow_noise`` makes every denoising step a Gaussian, so a
chunk's log-prob per element ``[B, K, A]`` is the sum over steps of the steps' Gaussian log-densities of the
recorded chain (``ActOutput.chain [B, N + 1, K, A]``, stored in the batch); the learner recomputes it from the
chain exactly. ``act`` with ``GREEDY`` runs the deterministic ODE (evaluation). The rollout temperature does
not apply (the noise method's std sets exploration); the entropy ``evaluate`` returns is the sample estimate
``-log p`` per element. ``tokens`` are the 256-bin discretisation of the (clamped) actions, for the record.

The value head (``expert.ValueHead``, K outputs: V before each env step of the chunk) reads the expert's
outputs over the prefix (``prefix_mean`` / ``prefix_last``) or its action tokens' features at t = 1 of a zero
chunk (``expert``), so a value depends on the observation only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vlarl.policies.base import SAMPLE, ActOutput, Generator, Sampling, randn
from vlarl.policies.openvla.modeling import PrismaticVLA
from vlarl.policies.openvla.policy import OpenVLAPolicy
from vlarl.policies.pi0 import flow
from vlarl.policies.pi0.expert import VALUE_SOURCES, ActionExpert, ExpertConfig, NoiseHead, PrefixCache, ValueHead

NOISE_METHODS = ("flow_sde", "flow_noise")


def expert_config(model: PrismaticVLA, action_dim: int, chunk_len: int) -> ExpertConfig:
    """The expert's sizes from the VLM's, as π0's gemma_300m beside gemma_2b: half the width, the same depth and
    heads, one KV head."""
    text = model.language_model.config
    d = model.hidden_size
    return ExpertConfig(
        action_dim=action_dim,
        chunk_len=chunk_len,
        prefix_dim=d,
        width=d // 2,
        depth=text.num_hidden_layers,
        num_heads=text.num_attention_heads,
        num_kv_heads=1,
        head_dim=d // text.num_attention_heads,
        mlp_dim=2 * d,
    )


class Pi0Policy(OpenVLAPolicy):
    """One decision is a chunk of ``chunk_len`` actions denoised by the action expert."""

    FAMILY = "pi0"
    SETTINGS = ("prompt", "chunk_len")

    def __init__(
        self,
        model: PrismaticVLA,
        tokenizer: Any,
        norm_stats: Any,
        action_dim: int,
        chunk_len: int = 4,
        noise_method: str = "flow_sde",
        denoise_steps: int = 4,
        noise_level: float = 0.5,
        value_source: str = "prefix_mean",
        detach_critic: bool = False,
        **kw: Any,
    ):
        super().__init__(model, tokenizer, norm_stats, action_dim, **kw)
        if self.critic is not None:
            raise ValueError("pi0's critic is its value head (policy.pi0.value_source); critic=separate is openvla's")
        if chunk_len < 1 or denoise_steps < 1:
            raise ValueError(f"chunk_len={chunk_len}, denoise_steps={denoise_steps}: both must be >= 1")
        if noise_method not in NOISE_METHODS:
            raise ValueError(f"noise_method={noise_method!r}; choose one of {NOISE_METHODS}")
        if noise_method == "flow_sde" and noise_level <= 0:
            raise ValueError(f"noise_level={noise_level}: flow_sde needs noise for its log-probs")
        if value_source not in VALUE_SOURCES:
            raise ValueError(f"value_source={value_source!r}; choose one of {VALUE_SOURCES}")
        self.chunk_len, self.denoise_steps = chunk_len, denoise_steps
        self.noise_method, self.noise_level = noise_method, noise_level
        config = expert_config(model, action_dim, chunk_len)
        self.expert = ActionExpert(config)
        self.noise_head = NoiseHead(config.width, action_dim) if noise_method == "flow_noise" else None
        self.value_head = ValueHead(config.width, value_source, detach_critic, outputs=chunk_len)

    def heads(self) -> dict[str, nn.Module]:
        extra = {"expert": self.expert, **({"noise_head": self.noise_head} if self.noise_head is not None else {})}
        return {**super().heads(), **extra}

    def _prefix(self, inputs: dict[str, torch.Tensor]) -> PrefixCache:
        embeds, mask = self.model.embed_prefix(**inputs)
        return self.expert.encode_prefix(self.model.run_llm(embeds, mask)[1], mask)

    def _step(self, prefix: PrefixCache) -> flow.StepFn:
        def step(x_t: torch.Tensor, time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            velocity, features = self.expert(prefix, x_t, time)
            return velocity, None if self.noise_head is None else self.noise_head(features)

        return step

    def _values(self, prefix: PrefixCache) -> torch.Tensor:
        features = None
        if self.value_head.source == "expert":
            b = prefix.mask.shape[0]
            zero = prefix.hidden.new_zeros(b, self.chunk_len, self.action_dim)
            features = self.expert(prefix, zero, prefix.hidden.new_ones(b))[1]
        return self.value_head(prefix, features)

    def _chain(self, chain: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        """Checks ``[B, N + 1, K, A]``."""
        want = (len(tokens), self.denoise_steps + 1, self.chunk_len, self.action_dim)
        if chain is None or tuple(chain.shape) != want:
            got = None if chain is None else list(chain.shape)
            raise ValueError(f"pi0 scores a denoising chain [B, N+1, K, A] = {list(want)}, got {got}")
        return chain

    @torch.no_grad()
    def act(self, obs: dict[str, Any], sampling: Sampling = SAMPLE, generator: Generator = None) -> ActOutput:
        """A chunk ``[B, K, A]`` per env: Flow-SDE/Flow-Noise draws (``GREEDY``: the ODE), log-probs ``[B, K, A]``."""
        inputs = self.prepare(obs)
        prefix = self._prefix(inputs)
        shape = (len(obs["instruction"]), self.chunk_len, self.action_dim)
        noise = randn(shape, generator, self.device)
        method = "flow_ode" if sampling.greedy else self.noise_method
        out = flow.sample(self._step(prefix), noise, self.denoise_steps, method, self.noise_level, generator=generator)
        normalised = out.actions.clamp(-1, 1).cpu().numpy()
        tokens = torch.as_tensor(self.action_tokenizer.encode(normalised), device=self.device)
        actions = self.norm_stats.unnormalize(normalised)
        return ActOutput(actions, tokens, out.log_probs.sum(1), self._values(prefix), inputs, out.chain)

    def evaluate(
        self,
        inputs: dict[str, torch.Tensor],
        tokens: torch.Tensor,
        temperature: float = 1.0,
        chain: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Learner pass over a recorded ``chain [B, N + 1, K, A]``: log-probs and entropy estimates ``[B, K, A]``
        (summed over the denoising steps), values ``[B, K]``."""
        chain = self._chain(chain, tokens)
        prefix = self._prefix(inputs)
        logp = flow.recompute_log_probs(self._step(prefix), chain.float(), self.noise_method, self.noise_level).sum(1)
        return logp, -logp, self._values(prefix)

    def encode_actions(self, env_actions: np.ndarray) -> torch.Tensor:
        """Env actions ``[..., K, A]`` -> SFT targets: the normalised actions in ``[-1, 1]`` (float)."""
        return torch.as_tensor(self.norm_stats.normalize(env_actions), dtype=torch.float32, device=self.device)

    def sft_loss(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """π0's flow-matching loss on the demo chunks ``[B, K, A]`` (time ~ 0.999 Beta(1.5, 1) + 0.001, global RNG);
        ``token_accuracy``: elements whose one-step action estimate ``x_t - t v`` lies within half a bin."""
        if targets.dim() != 3 or targets.shape[1:] != (self.chunk_len, self.action_dim):
            raise ValueError(f"pi0 trains on chunks [B, K={self.chunk_len}, A={self.action_dim}], got {targets.shape}")
        prefix = self._prefix(inputs)
        noise = torch.randn_like(targets)
        time = flow.sample_time(len(targets), device=targets.device)
        seen = {}

        def velocity_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            seen["x_t"], seen["v"] = x_t, self.expert(prefix, x_t, t)[0]
            return seen["v"]

        loss = flow.flow_matching_loss(velocity_fn, targets, noise, time)
        estimate = seen["x_t"] - time[:, None, None] * seen["v"].detach()
        within = ((estimate - targets).abs() < 1.0 / self.action_tokenizer.n_bins).float().mean()
        return loss, {"loss": loss.item(), "token_accuracy": within.item()}
