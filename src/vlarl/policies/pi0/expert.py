"""π0's action expert: a Gemma transformer (``transformers.GemmaModel``) that maps a noisy action chunk and its
flow time to a velocity, attending to a VLM prefix; plus the Flow-Noise head and the value head for RL.

Sequence and attention pattern (π0's ``make_att_2d_masks`` blocks, LeRobot ``modeling_pi0.py``): the prefix
``[B, S]`` (real tokens only, padding anywhere) attends bidirectionally among itself and never to the suffix;
the suffix is ``[state token (if state_dim > 0), K action tokens]``: the state token sees the prefix and itself,
the action tokens see the prefix, the state and all K action tokens. Positions count real tokens only
(``cumsum(mask) - 1``; the suffix continues after the prefix's real length), so padding changes nothing.

In π0 the prefix keys/values of layer l come from PaliGemma's layer l (the two towers share each attention):
``prefix_dim = 0`` builds that expert, and ``paligemma.PaliGemmaVLA.prefix_cache`` fills ``PrefixCache`` (the
depths, KV heads and head dims agree, as in π0: 18 layers, 1 KV head, 256). With ``prefix_dim = D`` the prefix is
any ``[B, S, D]`` tensor (e.g. a Prismatic VLM's last hidden states): ``prefix_proj`` maps it to the expert's
width and the expert's own layers compute its per-layer keys/values once (``encode_prefix``). Either cache is
computed once per observation and reused by every denoising step.

Module names follow LeRobot's ``PI0Pytorch`` (``action_in_proj``, ``action_out_proj``, ``state_proj``,
``action_time_mlp_in``, ``action_time_mlp_out``) and ``gemma_expert`` holds the Gemma layers, so its keys are
LeRobot's ``paligemma_with_expert.gemma_expert.model.*`` without ``paligemma_with_expert.`` and ``.model``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GemmaConfig, GemmaModel

from vlarl.policies.pi0.flow import StepFn

VALUE_SOURCES = ("prefix_mean", "prefix_last", "expert")


@dataclass
class ExpertConfig:
    """Sizes of the action expert (π0's ``gemma_300m``: width 1024, depth 18, mlp 4096, 8 heads, 1 KV head,
    head_dim 256; chunk 50, ``max_action_dim`` = ``max_state_dim`` = 32)."""

    action_dim: int
    chunk_len: int
    prefix_dim: int  # 0: the prefix's keys/values are the VLM's own (pi0's shared attention)
    state_dim: int = 0
    width: int = 64
    depth: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    head_dim: int = 32
    mlp_dim: int = 128
    min_period: float = 4e-3
    max_period: float = 4.0

    def gemma_config(self) -> GemmaConfig:
        return GemmaConfig(
            vocab_size=1,
            hidden_size=self.width,
            intermediate_size=self.mlp_dim,
            num_hidden_layers=self.depth,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            hidden_activation="gelu_pytorch_tanh",
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
        )


def time_embedding(time: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """π0's sine-cosine embedding of flow time ``[B] -> [B, dim]``: periods geometric from ``min_period`` to
    ``max_period`` over ``dim / 2`` frequencies, ``[sin(2 pi t / p), cos(2 pi t / p)]`` (computed in float64)."""
    if dim % 2:
        raise ValueError(f"time embedding dim={dim} must be even")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = time.double()[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1).to(time.dtype)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool ``[B, Lq, Lk]`` (True = may attend) -> additive ``[B, 1, Lq, Lk]`` (0 or the dtype's minimum)."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


@dataclass
class PrefixCache:
    """The prefix as the expert sees it: per layer ``keys``/``values [B, kv_heads, S, head_dim]`` (after RoPE),
    ``mask [B, S]`` bool (True = real token) and ``hidden [B, S, W]`` (the expert's output over the prefix)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    hidden: torch.Tensor

    @property
    def length(self) -> torch.Tensor:
        """Real prefix tokens per row ``[B]``."""
        return self.mask.sum(1)


class ActionExpert(nn.Module):
    """``(prefix, x_t [B, K, A], t [B], state [B, P]) -> velocity [B, K, A]`` (and the action tokens' features)."""

    def __init__(self, config: ExpertConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.prefix_proj = nn.Linear(config.prefix_dim, w) if config.prefix_dim else None
        self.gemma_expert = GemmaModel(config.gemma_config())
        self.gemma_expert.embed_tokens = None  # inputs are embeddings (as LeRobot's gemma_expert)
        self.action_in_proj = nn.Linear(config.action_dim, w)
        self.action_out_proj = nn.Linear(w, config.action_dim)
        self.state_proj = nn.Linear(config.state_dim, w) if config.state_dim else None
        self.action_time_mlp_in = nn.Linear(2 * w, w)
        self.action_time_mlp_out = nn.Linear(w, w)

    def encode_prefix(self, prefix: torch.Tensor, mask: torch.Tensor) -> PrefixCache:
        """``prefix [B, S, D]``, ``mask [B, S]`` (1 = real) -> the per-layer keys/values every step attends to.

        A padding query sees only itself (its output is never read; no row may be empty).
        """
        if self.prefix_proj is None:
            raise ValueError("this expert attends to its VLM's own keys/values (prefix_dim=0): no prefix to encode")
        mask = mask.bool()
        h = self.prefix_proj(prefix.float())
        s = mask.shape[1]
        allowed = mask[:, None, :].expand(-1, s, -1) | torch.eye(s, dtype=torch.bool, device=mask.device)
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache()
        # The cache goes positionally: its keyword is past_key_values in early transformers 5, cache later.
        out = self.gemma_expert(None, additive_mask(allowed, h.dtype), positions, cache, h, use_cache=True)
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        return PrefixCache(keys, values, mask, out.last_hidden_state)

    def embed_suffix(self, x_t: torch.Tensor, time: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """``[B, L, W]``: the state token (if any), then ``action_time_mlp_out(silu(action_time_mlp_in([action_in_proj
        (x_t), time_embedding(t)])))`` for each of the K actions."""
        w = self.config.width
        actions = self.action_in_proj(x_t.float())
        temb = time_embedding(time.float(), w, self.config.min_period, self.config.max_period)
        mixed = torch.cat([actions, temb[:, None, :].expand_as(actions)], dim=2)
        tokens = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(mixed)))
        if self.state_proj is None:
            return tokens
        if state is None:
            raise ValueError(f"the expert was built with state_dim={self.config.state_dim}: pass state [B, P]")
        return torch.cat([self.state_proj(state.float())[:, None, :], tokens], dim=1)

    def suffix_attention(self, prefix_mask: torch.Tensor) -> torch.Tensor:
        """Bool ``[B, L, S + L]``: every suffix query sees the real prefix; the state token sees itself, the
        action tokens see the state and every action token."""
        b, s = prefix_mask.shape
        k = self.config.chunk_len
        block = torch.tensor([0] * (self.state_proj is not None) + [1] * k, device=prefix_mask.device)
        within = block[None, :] <= block[:, None]
        return torch.cat([prefix_mask[:, None, :].expand(-1, len(block), -1), within.expand(b, -1, -1)], dim=2)

    def forward(
        self, prefix: PrefixCache, x_t: torch.Tensor, time: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One velocity evaluation: ``x_t [B, K, A]``, ``time [B]`` -> ``(velocity [B, K, A], features [B, K, W])``.

        ``features`` are the action tokens' final (normed) hidden states, what the noise and value heads read.
        """
        suffix = self.embed_suffix(x_t, time, state)
        length = suffix.shape[1]
        positions = prefix.length[:, None] + torch.arange(length, device=suffix.device)[None, :]
        cache = DynamicCache()
        for i, (k, v) in enumerate(zip(prefix.keys, prefix.values, strict=True)):
            cache.update(k, v, i)
        mask = additive_mask(self.suffix_attention(prefix.mask), suffix.dtype)
        out = self.gemma_expert(None, mask, positions, cache, suffix, use_cache=True)
        features = out.last_hidden_state[:, -self.config.chunk_len :]
        return self.action_out_proj(features), features


class NoiseHead(nn.Module):
    """Flow-Noise's learnt std: an MLP (tanh; RLinf's ``ExploreNoiseNet``, hidden ``[128, 64]``) on the action
    tokens' features ``[B, K, W]`` -> per-element ``log_std [B, K, A]``, squashed by tanh into
    ``[log min_std, log max_std]`` (RLinf's default std range ``[0.08, 0.16]``)."""

    def __init__(
        self,
        in_dim: int,
        action_dim: int,
        hidden: tuple[int, ...] = (128, 64),
        min_std: float = 0.08,
        max_std: float = 0.16,
    ):
        super().__init__()
        if not 0 < min_std <= max_std:
            raise ValueError(f"noise std range [{min_std}, {max_std}]: need 0 < min_std <= max_std")
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dims[-1], action_dim))
        self.log_min, self.log_max = math.log(min_std), math.log(max_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        squashed = (torch.tanh(self.mlp(features.float())) + 1) / 2
        return self.log_min + (self.log_max - self.log_min) * squashed


class ValueHead(nn.Module):
    """The critic: an MLP (hidden ``[512, 256, 128]``, ReLU; RLinf's π0 head) on one feature vector -> ``[B, outputs]``
    (``outputs`` = K: V before each env step of the chunk).

    ``source``: ``prefix_mean`` (mean of the real prefix tokens' expert outputs), ``prefix_last`` (the last real
    prefix token) or ``expert`` (mean over the K action tokens' features of a denoising step). ``detach`` stops
    the critic's gradient at its input (RLinf's ``detach_critic_input``).
    """

    def __init__(
        self,
        in_dim: int,
        source: str = "prefix_mean",
        detach: bool = False,
        hidden: tuple[int, ...] = (512, 256, 128),
        outputs: int = 1,
    ):
        super().__init__()
        if source not in VALUE_SOURCES:
            raise ValueError(f"value source={source!r}; choose one of {VALUE_SOURCES}")
        self.source, self.detach = source, detach
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dims[-1], outputs))

    def features(self, prefix: PrefixCache, expert_features: torch.Tensor | None = None) -> torch.Tensor:
        """The critic's input ``[B, W]``; ``expert_features [B, K, W]`` for ``source="expert"``."""
        if self.source == "expert":
            if expert_features is None:
                raise ValueError("value source 'expert' reads the action tokens' features: pass expert_features")
            return expert_features.mean(1)
        m = prefix.mask.to(prefix.hidden.dtype)
        if self.source == "prefix_mean":
            return (prefix.hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
        s = prefix.mask.shape[1]
        last = (torch.arange(s, device=m.device)[None, :] * prefix.mask).argmax(1)
        return prefix.hidden[torch.arange(len(last), device=m.device), last]

    def forward(self, prefix: PrefixCache, expert_features: torch.Tensor | None = None) -> torch.Tensor:
        x = self.features(prefix, expert_features).float()
        return self.mlp(x.detach() if self.detach else x)


def expert_step_fn(
    expert: ActionExpert, prefix: PrefixCache, state: torch.Tensor | None = None, noise_head: NoiseHead | None = None
) -> StepFn:
    """The ``flow.StepFn`` of one batch: the expert's velocity and, with ``noise_head``, Flow-Noise's log-std."""

    def step(x_t: torch.Tensor, time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        velocity, features = expert(prefix, x_t, time, state)
        return velocity, None if noise_head is None else noise_head(features)

    return step
