"""``OpenVLAPolicy``: the Prismatic VLA as an RL policy (rollout ``act`` and learner ``evaluate``).

Actions are decoded autoregressively, one token per action dim, with sampling restricted to the
256 action ids: ``logits[..., action_ids] / temperature``. Log-probs and entropies are those of
this restricted, tempered distribution (top-k/top-p only shape what is sampled, not the log-prob),
so with equal weights ``act`` and ``evaluate`` give the same log-probs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlarl.policies.base import SAMPLE, ActOutput, Generator, Sampling, categorical
from vlarl.policies.openvla.action_tokenizer import ActionNormStats, ActionTokenizer
from vlarl.policies.openvla.modeling import PrismaticVLA

VALUE_POSITIONS = ("last_prompt", "first_action", "mean")


class ValueHead(nn.Module):
    """MLP hidden ``[B, D]`` -> 512 -> 128 -> ``outputs`` with GELU (RL4VLA's shared actor-critic head): ``[B, K]``,
    the value before each env step of a K-action chunk (RLinf's OFT head)."""

    def __init__(self, hidden: int, outputs: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, 512), nn.GELU(), nn.Linear(512, 128), nn.GELU(), nn.Linear(128, outputs)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h.float())


class OpenVLAPolicy(nn.Module):
    """One decision is one action (``chunk_len`` 1): its A tokens decoded one after another."""

    FAMILY = "openvla"  # written into checkpoints; loading checks it
    SETTINGS = ("prompt", "value_position", "critic")  # constructor arguments a checkpoint restores
    DEFAULT_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"

    def __init__(
        self,
        model: PrismaticVLA,
        tokenizer: Any,
        norm_stats: ActionNormStats,
        action_dim: int,
        prompt: str = DEFAULT_PROMPT,
        value_position: str = "last_prompt",
        critic: str = "shared",
        action_vocab_size: int | None = None,
    ):
        super().__init__()
        if value_position not in VALUE_POSITIONS:
            raise ValueError(f"value_position={value_position!r}; choose one of {VALUE_POSITIONS}")
        if critic not in ("shared", "separate"):
            raise ValueError(f"critic={critic!r}; choose 'shared' (value head on the policy) or 'separate'")
        self.model = model
        self.tokenizer = tokenizer
        # Action ids are the last n_bins below ``action_vocab_size``: len(tokenizer) for vlarl's
        # tokenizers (actions are its last tokens), the base vocabulary (32000) for OpenVLA's Llama
        # tokenizer, whose added <PAD> (32000) sits above the action ids.
        self.action_tokenizer = ActionTokenizer(action_vocab_size or len(tokenizer), model.config.n_action_bins)
        self.norm_stats = norm_stats
        self.proprio_stats: ActionNormStats | None = None  # set: proprio is normalised to [-1, 1] (as OFT)
        self.action_dim = action_dim
        self.chunk_len = 1
        self.prompt = prompt
        self.value_position = value_position
        self.value_head = ValueHead(model.hidden_size)
        # A separate critic is a copy of the VLA (VLA-RL's "homogeneous" critic) read by the value head.
        self.critic = copy.deepcopy(model) if critic == "separate" else None
        if self.action_tokenizer.vocab_size > model.language_model.config.vocab_size:
            raise ValueError("the tokenizer is larger than the language model's vocabulary")

    def heads(self) -> dict[str, nn.Module]:
        """The modules a checkpoint stores beside OpenVLA's own tensors (``vlarl_heads.safetensors``), by prefix."""
        heads = {"value_head": self.value_head}
        if self.critic is not None:
            heads["critic"] = self.critic
        if self.model.proprio_projector is not None:
            heads["proprio_projector"] = self.model.proprio_projector
        return heads

    def freeze_vision(self) -> None:
        """Stop training the vision towers (here and in a separate critic): the learner skips their backward."""
        for model in (self.model, self.critic):
            if model is not None:
                model.vision_backbone.requires_grad_(False)

    def freeze_backbone(self) -> None:
        """Refused: this family's actions are its language model's tokens, so only the value head would learn."""
        raise ValueError(
            f"algo.freeze_backbone: the {self.FAMILY} family acts through its language model, so only the value "
            "head would learn; use algo.freeze_vision or LoRA (policy.lora_rank), or policy.family=pi0"
        )

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: ``value`` (the value head and a separate critic) and ``policy`` (the rest)."""
        value = [*self.value_head.parameters(), *(self.critic.parameters() if self.critic is not None else [])]
        ids = {id(p) for p in value}
        trainable = [p for p in self.parameters() if p.requires_grad]
        return {
            "policy": [p for p in trainable if id(p) not in ids],
            "value": [p for p in trainable if id(p) in ids],
        }

    def save(self, path: str | Path) -> None:
        """The OpenVLA layout (``checkpoint.save_pretrained``), LoRA adapters merged."""
        from vlarl.policies.openvla.checkpoint import save_pretrained
        from vlarl.policies.openvla.lora import merged_copy

        save_pretrained(merged_copy(self), path)

    def load(self, path: str | Path) -> None:
        """Every weight from a folder ``save`` wrote; with LoRA the export is merged, so load the adapters."""
        from vlarl.policies.openvla.checkpoint import load_pretrained

        if getattr(self, "lora", None) is not None:
            raise ValueError(f"{path} holds merged weights; a LoRA policy loads its adapters with load_state_dict")
        critic = "shared" if self.critic is None else "separate"
        self.load_state_dict(load_pretrained(path, critic=critic, cls=type(self)).state_dict())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare(self, obs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Env observations -> model inputs: pixel_values [B,V,C,S,S], input_ids/attention_mask [B,L], proprio."""
        images = torch.as_tensor(np.asarray(obs["image"]), device=self.device)
        b, v = images.shape[:2]
        pixels = self.model.vision_backbone.normalize(images.flatten(0, 1))
        prompts = [self.prompt.format(instruction=text.lower().rstrip(".")) for text in obs["instruction"]]
        ids = [self.tokenizer(p).input_ids for p in prompts]
        if self.model.config.prompt_suffix_id is not None:
            ids = [
                x if x[-1] == self.model.config.prompt_suffix_id else [*x, self.model.config.prompt_suffix_id]
                for x in ids
            ]
        length = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (length - len(x)) + x for x in ids], device=self.device)
        mask = torch.tensor([[0] * (length - len(x)) + [1] * len(x) for x in ids], device=self.device)
        out = {"pixel_values": pixels.reshape(b, v, *pixels.shape[1:]), "input_ids": input_ids, "attention_mask": mask}
        if self.model.proprio_projector is not None:
            proprio = np.asarray(obs["proprio"], np.float32)
            if self.proprio_stats is not None:
                proprio = self.proprio_stats.normalize(proprio)
            out["proprio"] = torch.as_tensor(proprio, device=self.device)
        return out

    def _restricted(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Full-vocab logits [..., V] -> tempered log-probs over the 256 action ids [..., 256]."""
        first = self.action_tokenizer.first_id
        sliced = logits[..., first : first + self.action_tokenizer.n_bins].float()
        return torch.log_softmax(sliced / temperature, dim=-1)

    def _value(self, hidden: torch.Tensor, mask: torch.Tensor, first_action_hidden: torch.Tensor) -> torch.Tensor:
        if self.value_position == "last_prompt":
            return self.value_head(hidden[:, -1])
        if self.value_position == "first_action":
            return self.value_head(first_action_hidden)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return self.value_head((hidden * m).sum(1) / m.sum(1).clamp(min=1))

    @staticmethod
    def _sample(logp: torch.Tensor, sampling: Sampling, generator: Generator) -> torch.Tensor:
        if sampling.greedy:
            return logp.argmax(-1)
        masked = logp.clone()
        if sampling.top_k > 0:
            kth = masked.topk(min(sampling.top_k, masked.shape[-1]), dim=-1).values[..., -1:]
            masked[masked < kth] = -float("inf")
        if sampling.top_p < 1.0:
            sorted_lp, order = masked.sort(dim=-1, descending=True)
            cum = sorted_lp.softmax(-1).cumsum(-1)
            drop = cum - sorted_lp.softmax(-1) >= sampling.top_p
            masked.scatter_(-1, order, sorted_lp.masked_fill(drop, -float("inf")))
        return categorical(masked.softmax(-1), generator)

    @torch.no_grad()
    def act(self, obs: dict[str, Any], sampling: Sampling = SAMPLE, generator: Generator = None) -> ActOutput:
        """One batched call for all envs: decode A action tokens with a KV cache."""
        inputs = self.prepare(obs)
        embeds, mask = self.model.embed_prefix(**inputs)
        from transformers import DynamicCache

        logits, hidden, cache = self.model.run_llm(embeds, mask, past_key_values=DynamicCache())
        prefix_hidden, prefix_mask = hidden, mask
        first_id = self.action_tokenizer.first_id
        tokens, logps = [], []
        first_action_hidden = None
        for a in range(self.action_dim):
            logp = self._restricted(logits[:, -1], sampling.temperature)
            idx = self._sample(logp, sampling, generator)
            tokens.append(idx + first_id)
            logps.append(logp.gather(-1, idx.unsqueeze(-1)).squeeze(-1))
            if a == self.action_dim - 1 and self.value_position != "first_action":
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            tok_embeds = self.model.language_model.get_input_embeddings()(tokens[-1].unsqueeze(1))
            logits, hidden, cache = self.model.run_llm(tok_embeds, mask, past_key_values=cache)
            if a == 0:
                first_action_hidden = hidden[:, -1]
        tokens_t = torch.stack(tokens, dim=1)
        if self.critic is None:
            value = self._value(prefix_hidden, prefix_mask, first_action_hidden)
        else:
            value = self._value(*self._hidden(self.critic, inputs, tokens_t)[1:])
        normalised = self.action_tokenizer.decode(tokens_t.cpu().numpy())
        actions = self.norm_stats.unnormalize(normalised)[:, None]
        return ActOutput(actions, tokens_t[:, None], torch.stack(logps, dim=1)[:, None], value, inputs)

    def forward_tokens(self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Teacher-forced pass over prefix + ``tokens [B, A]``.

        Returns logits predicting each action token ``[B, A, V]``, prefix hidden ``[B, S, D]``,
        prefix mask ``[B, S]`` and the hidden state at the first action token ``[B, D]``.
        """
        return self._hidden(self.model, inputs, tokens)

    @staticmethod
    def _hidden(model: PrismaticVLA, inputs: dict[str, torch.Tensor], tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embeds, mask = model.embed_prefix(**inputs)
        s = embeds.shape[1]
        tok_embeds = model.language_model.get_input_embeddings()(tokens)
        full_mask = torch.cat([mask, torch.ones_like(tokens)], dim=1)
        logits, hidden, _ = model.run_llm(torch.cat([embeds, tok_embeds], dim=1), full_mask)
        return logits[:, s - 1 : s - 1 + tokens.shape[1]], hidden[:, :s], mask, hidden[:, s]

    def evaluate(
        self,
        inputs: dict[str, torch.Tensor],
        tokens: torch.Tensor,
        temperature: float = 1.0,
        chain: torch.Tensor | None = None,  # a token policy's draw is its tokens: unused
        denoise_step: torch.Tensor | None = None,  # unused, as chain
    ) -> tuple[torch.Tensor, ...]:
        """Learner pass over ``tokens [B, 1, A]``: per-token log-probs and entropies ``[B, 1, A]`` at
        ``temperature``, values ``[B, 1]``."""
        tokens = self._one_step(tokens)
        logits, prefix_hidden, mask, first_action_hidden = self.forward_tokens(inputs, tokens)
        logp = self._restricted(logits, temperature)
        idx = (tokens - self.action_tokenizer.first_id).clamp(0, self.action_tokenizer.n_bins - 1)
        token_logp = logp.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        if self.critic is not None:
            prefix_hidden, mask, first_action_hidden = self._hidden(self.critic, inputs, tokens)[1:]
        value = self._value(prefix_hidden, mask, first_action_hidden)
        return token_logp[:, None], entropy[:, None], value

    def sft_loss(self, inputs: dict[str, torch.Tensor], tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Cross-entropy (full vocabulary, as OpenVLA) on the action tokens ``[B, 1, A]``; returns (loss, metrics)."""
        tokens = self._one_step(tokens)
        logits = self.forward_tokens(inputs, tokens)[0].float()
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        accuracy = (logits.argmax(-1) == tokens).float().mean()
        return loss, {"loss": loss.item(), "token_accuracy": accuracy.item()}

    def encode_actions(self, env_actions: np.ndarray) -> torch.Tensor:
        """Env actions ``[..., A]`` -> target token ids ``[..., A]`` (normalise, then discretise)."""
        return torch.as_tensor(self.action_tokenizer.encode(self.norm_stats.normalize(env_actions)), device=self.device)

    def _one_step(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, 1, A]`` -> ``[B, A]``; this family decides one action at a time."""
        if tokens.dim() != 3 or tokens.shape[1] != 1 or tokens.shape[2] != self.action_dim:
            raise ValueError(f"openvla scores tokens [B, 1, A={self.action_dim}], got {list(tokens.shape)}")
        return tokens[:, 0]
