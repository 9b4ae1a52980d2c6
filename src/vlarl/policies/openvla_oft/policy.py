"""``OFTPolicy``: OpenVLA-OFT's parallel decoding of an action chunk on the Prismatic backbone.

Sequence layout, as OFT's ``predict_action``: OpenVLA's prefix ``[BOS, patches, (proprio), prompt]``, then
``K x A`` action slots whose input embeddings are zero (OFT's "empty action embeddings") and one stop token
(EOS). Attention is bidirectional over the whole sequence (only padding is masked), as OFT's patched SDPA
attention. As in a causal LM, the token of slot j is read one position earlier: from the last prompt token
for slot 0, from slot j-1 after that. One forward pass gives all ``K x A`` distributions, so the chunk's tokens
are drawn independently given the observation; the learner's ``evaluate`` runs the same pass, so rollout and
learner log-probs agree exactly. The value head reads the prefix as in ``openvla`` and gives K values, the
value before each env step of the chunk (``[..., 0]`` is the observation's own; RLinf's OFT value head).

``action_head="l1"`` puts OFT's L1-regression head (``heads.L1Head``) on the same slot states: ``act`` then
returns its continuous actions (tokens and log-probs are those of their discretisation under the discrete
head, for the record), and SFT trains it with OFT's L1 loss. RL trains the discrete head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlarl.policies.base import SAMPLE, ActOutput, Generator, Sampling
from vlarl.policies.openvla.modeling import PrismaticVLA
from vlarl.policies.openvla.policy import OpenVLAPolicy, ValueHead
from vlarl.policies.openvla_oft.heads import L1Head

ACTION_HEADS = ("discrete", "l1")


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
    SETTINGS = (*OpenVLAPolicy.SETTINGS, "chunk_len", "action_head")

    def __init__(
        self,
        model: PrismaticVLA,
        tokenizer: Any,
        norm_stats: Any,
        action_dim: int,
        chunk_len: int,
        action_head: str = "discrete",
        **kw: Any,
    ):
        super().__init__(model, tokenizer, norm_stats, action_dim, **kw)
        if chunk_len < 1:
            raise ValueError(f"chunk_len={chunk_len}: an OFT chunk holds at least one action")
        if action_head not in ACTION_HEADS:
            raise ValueError(f"action_head={action_head!r}; choose one of {ACTION_HEADS}")
        self.chunk_len, self.action_head = chunk_len, action_head
        self.value_head = ValueHead(model.hidden_size, chunk_len)
        self.l1_head = L1Head(model.hidden_size, action_dim) if action_head == "l1" else None

    def heads(self) -> dict[str, nn.Module]:
        return {**super().heads(), **({"action_head": self.l1_head} if self.l1_head is not None else {})}

    def _parallel(self, model: PrismaticVLA, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One pass over prefix + slots + stop: the logits of the K*A action tokens ``[B, K*A, V]`` and the hidden
        states they are read from ``[B, K*A, D]``, then prefix hidden ``[B, S, D]``, prefix mask ``[B, S]`` and the
        first slot's hidden state ``[B, D]`` (what ``_value`` reads)."""
        embeds, mask = model.embed_prefix(**inputs)
        b, s, d = embeds.shape
        n = self.chunk_len * self.action_dim
        eos = torch.full_like(mask[:, :1], model.language_model.config.eos_token_id)
        stop = model.language_model.get_input_embeddings()(eos)
        full = torch.cat([embeds, embeds.new_zeros(b, n, d), stop.to(embeds.dtype)], dim=1)
        real = torch.cat([mask, mask.new_ones(b, n + 1)], dim=1)
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        logits, hidden, _ = model.run_llm(full, key_padding_attention(real, full.dtype), position_ids=positions)
        read = slice(s - 1, s - 1 + n)
        return logits[:, read], hidden[:, read], hidden[:, :s], mask, hidden[:, s]

    def _chunk(self, tokens: torch.Tensor) -> torch.Tensor:
        """Checks ``[B, K, A]``."""
        k, a = self.chunk_len, self.action_dim
        if tokens.dim() != 3 or tokens.shape[1:] != (k, a):
            raise ValueError(f"openvla_oft scores tokens [B, K={k}, A={a}], got {list(tokens.shape)}")
        return tokens

    def _values(self, inputs: dict[str, torch.Tensor], own: tuple[torch.Tensor, ...]) -> torch.Tensor:
        prefix = own if self.critic is None else self._parallel(self.critic, inputs)[2:]
        return self._value(*prefix)

    @torch.no_grad()
    def act(self, obs: dict[str, Any], sampling: Sampling = SAMPLE, generator: Generator = None) -> ActOutput:
        """One batched pass for all envs: a chunk ``[B, K, A]`` each, its tokens drawn independently."""
        inputs = self.prepare(obs)
        logits, slots, *prefix = self._parallel(self.model, inputs)
        logp = self._restricted(logits, sampling.temperature)  # [B, K*A, bins]
        shape = (len(logp), self.chunk_len, self.action_dim)
        if self.l1_head is not None:
            normalised = self.l1_head(slots, self.chunk_len).clamp(-1, 1).cpu().numpy()
            tokens = torch.as_tensor(self.action_tokenizer.encode(normalised), device=logp.device)
            idx = (tokens - self.action_tokenizer.first_id).flatten(1)
        else:
            idx = self._sample(logp.flatten(0, 1), sampling, generator).view(logp.shape[:2])
            tokens = (idx + self.action_tokenizer.first_id).view(shape)
            normalised = self.action_tokenizer.decode(tokens.cpu().numpy())
        token_logp = logp.gather(-1, idx.unsqueeze(-1)).view(shape)
        actions = self.norm_stats.unnormalize(normalised)
        return ActOutput(actions, tokens, token_logp, self._values(inputs, tuple(prefix)), inputs)

    def evaluate(
        self,
        inputs: dict[str, torch.Tensor],
        tokens: torch.Tensor,
        temperature: float = 1.0,
        chain: torch.Tensor | None = None,  # a token policy's draw is its tokens: unused
        denoise_step: torch.Tensor | None = None,  # unused, as chain
    ) -> tuple[torch.Tensor, ...]:
        """Learner pass over ``tokens [B, K, A]``: log-probs and entropies ``[B, K, A]``, values ``[B, K]``."""
        tokens = self._chunk(tokens)
        logits, _, *prefix = self._parallel(self.model, inputs)
        logp = self._restricted(logits, temperature).view(*tokens.shape, -1)
        idx = (tokens - self.action_tokenizer.first_id).clamp(0, self.action_tokenizer.n_bins - 1)
        token_logp = logp.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return token_logp, entropy, self._values(inputs, tuple(prefix))

    def encode_actions(self, env_actions: Any) -> torch.Tensor:
        """Env actions ``[..., K, A]`` -> SFT targets: token ids, or (L1 head) the normalised actions (float)."""
        if self.l1_head is None:
            return super().encode_actions(env_actions)
        return torch.as_tensor(self.norm_stats.normalize(env_actions), device=self.device)

    def sft_loss(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Cross-entropy (full vocabulary) of every slot on the demo chunk's tokens ``[B, K, A]``; with the L1 head,
        OFT's L1 loss on the normalised actions ``[B, K, A]`` (``token_accuracy``: within half a bin)."""
        targets = self._chunk(targets)
        if self.l1_head is not None:
            pred = self.l1_head(self._parallel(self.model, inputs)[1], self.chunk_len)
            loss = (pred - targets).abs().mean()
            within = ((pred - targets).abs() < 1.0 / self.action_tokenizer.n_bins).float().mean()
            return loss, {"loss": loss.item(), "token_accuracy": within.item()}
        tokens = targets.flatten(1)
        logits = self._parallel(self.model, inputs)[0].float()
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        accuracy = (logits.argmax(-1) == tokens).float().mean()
        return loss, {"loss": loss.item(), "token_accuracy": accuracy.item()}
