"""``Pi0Policy``: a π0-style flow-matching policy, the action expert of ``expert.py`` on a VLM prefix.

Two prefixes: vlarl's Prismatic VLM (``openvla``'s vision tower, projector and Llama over ``[BOS, patches,
(proprio), prompt]``; the expert re-encodes its last hidden states) or π0's own PaliGemma (``paligemma.py``; the
expert attends to its per-layer keys/values; a LeRobot checkpoint loads so, ``lerobot.py``). The action expert
denoises a chunk ``[K, A]`` of normalised actions from Gaussian noise in ``denoise_steps`` Euler steps
(``flow.py``'s convention: t = 1 noise, t = 0 action). Proprio enters as the Prismatic prefix's proprio token
(``policy.use_proprio``) or, with an expert built with ``state_dim``, as π0's state token (``inputs["state"]``).

RL log-probs (πRL): ``noise_method`` ``flow_sde`` or ``flow_noise`` makes every denoising step a Gaussian, so a
chunk's log-prob per element ``[B, K, A]`` is the sum over steps of the steps' Gaussian log-densities of the
recorded chain (``ActOutput.chain [B, N + 1, K, A]``, stored in the batch); the learner recomputes it from the
chain exactly. ``joint_logprob=False`` (RLinf's default) makes one uniformly drawn step per decision
stochastic and the others follow the ODE; the log-prob is that step's (``ActOutput.denoise_step [B]``, stored).
``act`` with ``GREEDY`` runs the deterministic ODE (evaluation). The rollout temperature does not apply (the
noise method's std sets exploration); the entropy ``evaluate`` returns is the sample estimate ``-log p`` per
element. ``tokens`` are the 256-bin discretisation of the (clamped) actions, for the record.

The value head (``expert.ValueHead``, K outputs: V before each env step of the chunk) reads the expert's
outputs over the prefix (``prefix_mean`` / ``prefix_last``) or its action tokens' features at t = 1 of a zero
chunk (``expert``), so a value depends on the observation only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlarl.policies.base import SAMPLE, ActOutput, Generator, Sampling, categorical, randn
from vlarl.policies.openvla.modeling import PrismaticVLA
from vlarl.policies.openvla.policy import OpenVLAPolicy
from vlarl.policies.pi0 import flow
from vlarl.policies.pi0.expert import (
    VALUE_SOURCES,
    ActionExpert,
    ExpertConfig,
    NoiseHead,
    PrefixCache,
    ValueHead,
    expert_step_fn,
)

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
        joint_logprob: bool = True,
        expert: ExpertConfig | None = None,
        **kw: Any,
    ):
        """``expert``: the action expert's sizes; None derives them from ``model`` (``expert_config``)."""
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
        self.noise_method, self.noise_level, self.joint_logprob = noise_method, noise_level, joint_logprob
        config = expert or expert_config(model, action_dim, chunk_len)
        if (config.action_dim, config.chunk_len) != (action_dim, chunk_len):
            raise ValueError(
                f"expert denoises [{config.chunk_len}, {config.action_dim}], policy [{chunk_len}, {action_dim}]"
            )
        self.expert = ActionExpert(config)
        self.noise_head = NoiseHead(config.width, action_dim) if noise_method == "flow_noise" else None
        # the prefix sources read the prefix's hidden states: the VLM's own where the expert shares its keys/values
        shared = config.prefix_dim == 0 and value_source != "expert"
        width = model.hidden_size if shared else config.width
        self.value_head = ValueHead(width, value_source, detach_critic, outputs=chunk_len)

    def freeze_backbone(self) -> None:
        """Stop training the prefix (the VLM and any LoRA adapters in it): the expert, noise and value heads learn."""
        self.model.requires_grad_(False)

    def heads(self) -> dict[str, nn.Module]:
        extra = {"expert": self.expert, **({"noise_head": self.noise_head} if self.noise_head is not None else {})}
        return {**super().heads(), **extra}

    def prepare(self, obs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The VLM's inputs, and ``state [B, P]`` (normalised by ``proprio_stats``) for an expert with a state
        token."""
        inputs = super().prepare(obs)
        if self.expert.state_proj is not None:
            proprio = np.asarray(obs["proprio"], np.float32)
            if self.proprio_stats is not None:
                proprio = self.proprio_stats.normalize(proprio)
            inputs["state"] = torch.as_tensor(proprio, dtype=torch.float32, device=self.device)
        return inputs

    def save(self, path: str | Path) -> None:
        """vlarl's Prismatic layout, or LeRobot's for a PaliGemma prefix (``lerobot.save_lerobot``)."""
        if isinstance(self.model, PrismaticVLA):
            return super().save(path)
        from vlarl.policies.pi0.lerobot import save_lerobot

        save_lerobot(self, path)

    def load(self, path: str | Path) -> None:
        if isinstance(self.model, PrismaticVLA):
            return super().load(path)
        from vlarl.policies.pi0.lerobot import load_lerobot

        options = dict(chunk_len=self.chunk_len, noise_method=self.noise_method, denoise_steps=self.denoise_steps)
        loaded = load_lerobot(path, self.action_dim, self.expert.config.state_dim, **options)
        self.load_state_dict(loaded.state_dict())

    def _prefix(self, inputs: dict[str, torch.Tensor]) -> PrefixCache:
        embeds, mask = self.model.embed_prefix(**inputs)
        if self.expert.prefix_proj is None:
            return self.model.prefix_cache(embeds, mask)
        return self.expert.encode_prefix(self.model.run_llm(embeds, mask)[1], mask)

    def _step(self, prefix: PrefixCache, inputs: dict[str, torch.Tensor]) -> flow.StepFn:
        return expert_step_fn(self.expert, prefix, inputs.get("state"), self.noise_head)

    def _values(self, prefix: PrefixCache, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        features = None
        if self.value_head.source == "expert":
            b = prefix.mask.shape[0]
            zero = prefix.hidden.new_zeros(b, self.chunk_len, self.action_dim)
            features = self.expert(prefix, zero, prefix.hidden.new_ones(b), inputs.get("state"))[1]
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
        one = None  # joint: every step stochastic; else one uniform step per row (the rest follow the ODE)
        if not (self.joint_logprob or sampling.greedy):
            uniform = torch.full((len(noise), self.denoise_steps), 1.0 / self.denoise_steps, device=self.device)
            one = categorical(uniform, generator)
        step = self._step(prefix, inputs)
        out = flow.sample(step, noise, self.denoise_steps, method, self.noise_level, one, generator)
        normalised = out.actions.cpu().numpy()
        if self.norm_stats.bounded:  # q01/q99 statistics map the action range onto [-1, 1]
            normalised = normalised.clip(-1, 1)
        tokens = torch.as_tensor(self.action_tokenizer.encode(normalised), device=self.device)
        actions = self.norm_stats.unnormalize(normalised)
        values = self._values(prefix, inputs)
        return ActOutput(actions, tokens, out.log_probs.sum(1), values, inputs, out.chain, one)

    def evaluate(
        self,
        inputs: dict[str, torch.Tensor],
        tokens: torch.Tensor,
        temperature: float = 1.0,
        chain: torch.Tensor | None = None,
        denoise_step: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Learner pass over a recorded ``chain [B, N + 1, K, A]`` and its ``denoise_step [B]`` (-1 or None: every
        step was stochastic): log-probs and entropy estimates ``[B, K, A]`` (summed over the stochastic steps),
        values ``[B, K]``."""
        chain = self._chain(chain, tokens)
        stochastic = None
        if denoise_step is not None and (denoise_step >= 0).any():
            if (denoise_step < 0).any():
                raise ValueError("a batch mixes one-step and every-step chains (policy.pi0.joint_logprob changed)")
            stochastic = flow.stochastic_steps(len(chain), self.denoise_steps, denoise_step, chain.device)
        prefix = self._prefix(inputs)
        step = self._step(prefix, inputs)
        logp = flow.recompute_log_probs(step, chain.float(), self.noise_method, self.noise_level, stochastic).sum(1)
        return logp, -logp, self._values(prefix, inputs)

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
            seen["x_t"], seen["v"] = x_t, self.expert(prefix, x_t, t, inputs.get("state"))[0]
            return seen["v"]

        loss = flow.flow_matching_loss(velocity_fn, targets, noise, time)
        estimate = seen["x_t"] - time[:, None, None] * seen["v"].detach()
        within = ((estimate - targets).abs() < 1.0 / self.action_tokenizer.n_bins).float().mean()
        return loss, {"loss": loss.item(), "token_accuracy": within.item()}
