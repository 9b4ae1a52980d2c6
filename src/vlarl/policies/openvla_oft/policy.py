"""``OFTPolicy``: OpenVLA-OFT's parallel decoding of an action chunk on the Prismatic backbone.

Sequence layout, as OFT's ``predict_action``: OpenVLA's prefix ``[BOS, patches, (proprio), prompt]``, then
``K x A`` action slots whose input embeddings are zero (OFT's "empty action embeddings") and one stop token
(EOS). Attention is bidirectional over the whole sequence (only padding is masked), as OFT's patched SDPA
attention. As in a causal LM, the token of slot j is read one position earlier: from the last prompt token
for slot 0, from slot j-1 after that. One forward pass gives all ``K x A`` distributions, so the chunk's tokens
are drawn independently given the observation; the learner's ``evaluate`` runs the same pass, so rollout and
learner log-probs agree exactly. The value (one per chunk) is read from the prefix as in ``openvla``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlarl.policies.base import SAMPLE, ActOutput, Sampling
from vlarl.policies.openvla.modeling import PrismaticVLA
from vlarl.policies.openvla.policy import OpenVLAPolicy


def key_padding_attention(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive bidirectional attention mask ``[B, 1, L, L]`` from a padding mask ``[B, L]`` (1 = real token).

    Every query sees every real key; a padding query sees itself only (its output is never read; a row with
    no key would give NaNs).
    """
    length = mask.shape[1]
    allowed = mask.bool().unsqueeze(1).expand(-1, length, -1)
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=mask.device)
    out = torch.zeros(allowed.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


class OFTPolicy(OpenVLAPolicy):
    """One decision is a chunk of ``chunk_len`` actions, all ``K x A`` tokens decoded in one pass."""

    FAMILY = "openvla_oft"
    SETTINGS = (*OpenVLAPolicy.SETTINGS, "chunk_len")

    def __init__(self, model: PrismaticVLA, tokenizer: Any, norm_stats: Any, action_dim: int, chunk_len: int, **kw):
        super().__init__(model, tokenizer, norm_stats, action_dim, **kw)
        if chunk_len < 1:
            raise ValueError(f"chunk_len={chunk_len}: an OFT chunk holds at least one action")
        self.chunk_len = chunk_len

    def _parallel(self, model: PrismaticVLA, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One pass over prefix + slots + stop: the logits of the K*A action tokens ``[B, K*A, V]``, prefix
        hidden ``[B, S, D]``, prefix mask ``[B, S]`` and the first slot's hidden state ``[B, D]``."""
        embeds, mask = model.embed_prefix(**inputs)
        b, s, d = embeds.shape
        n = self.chunk_len * self.action_dim
        eos = torch.full_like(mask[:, :1], model.language_model.config.eos_token_id)
        stop = model.language_model.get_input_embeddings()(eos)
        full = torch.cat([embeds, embeds.new_zeros(b, n, d), stop.to(embeds.dtype)], dim=1)
        real = torch.cat([mask, mask.new_ones(b, n + 1)], dim=1)
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        logits, hidden, _ = model.run_llm(full, key_padding_attention(real, full.dtype), position_ids=positions)
        return logits[:, s - 1 : s - 1 + n], hidden[:, :s], mask, hidden[:, s]

    def _chunk(self, tokens: torch.Tensor) -> torch.Tensor:
        k, a = self.chunk_len, self.action_dim
        if tokens.dim() != 3 or tokens.shape[1:] != (k, a):
            raise ValueError(f"openvla_oft scores tokens [B, K={k}, A={a}], got {list(tokens.shape)}")
        return tokens

    def _values(self, inputs: dict[str, torch.Tensor], own: tuple[torch.Tensor, ...]) -> torch.Tensor:
        prefix = own if self.critic is None else self._parallel(self.critic, inputs)[1:]
        return self._value(*prefix)

    @torch.no_grad()
    def act(
        self, obs: dict[str, Any], sampling: Sampling = SAMPLE, generator: torch.Generator | None = None
    ) -> ActOutput:
        """One batched pass for all envs: a chunk ``[B, K, A]`` each, its tokens drawn independently."""
        inputs = self.prepare(obs)
        logits, *prefix = self._parallel(self.model, inputs)
        logp = self._restricted(logits, sampling.temperature)  # [B, K*A, bins]
        idx = self._sample(logp.flatten(0, 1), sampling, generator).view(logp.shape[:2])
        shape = (len(idx), self.chunk_len, self.action_dim)
        tokens = (idx + self.action_tokenizer.first_id).view(shape)
        token_logp = logp.gather(-1, idx.unsqueeze(-1)).view(shape)
        actions = self.norm_stats.unnormalize(self.action_tokenizer.decode(tokens.cpu().numpy()))
        return ActOutput(actions, tokens, token_logp, self._values(inputs, tuple(prefix)), inputs)

    def evaluate(
        self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, ...]:
        """Learner pass over ``tokens [B, K, A]``: log-probs and entropies ``[B, K, A]``, values ``[B]``."""
        tokens = self._chunk(tokens)
        logits, *prefix = self._parallel(self.model, inputs)
        logp = self._restricted(logits, temperature).view(*tokens.shape, -1)
        idx = (tokens - self.action_tokenizer.first_id).clamp(0, self.action_tokenizer.n_bins - 1)
        token_logp = logp.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return token_logp, entropy, self._values(inputs, tuple(prefix))

    def sft_loss(self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Cross-entropy (full vocabulary) of every slot on the demo chunk's tokens ``[B, K, A]``."""
        tokens = self._chunk(tokens).flatten(1)
        logits = self._parallel(self.model, inputs)[0].float()
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        accuracy = (logits.argmax(-1) == tokens).float().mean()
        return loss, {"loss": loss.item(), "token_accuracy": accuracy.item()}
