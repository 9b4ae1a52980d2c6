"""The rollout batch: the one type that moves collector -> scorer -> advantages -> learner.

Every key is declared once in ``SCHEMA`` with its dtype and named dims. Dims: T chunk-steps (one policy
decision each), B envs (episodes), K chunk length (actions per decision; 1 for single-step policies), A action
dims, S denoising-chain points (flow policies), V camera views, H x W pixels, P proprio dims. Observations
stay numpy (uint8 images are the bulk of a batch; the policy converts the rows it reads), everything else is
torch.

Per-step keys with a K dim hold one entry per env step of the decision's chunk (``valid``: the inner steps that
ran); ``env_major`` lays them out as one env-step sequence ``[T*K, B]`` (the "action" reward granularity), and
the chunk-level reward of a decision is their sum. ``gather_obs`` is the one place observation rows are cut out
of arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Key:
    dtype: str  # numpy/torch dtype name; "str" for a list of strings
    dims: tuple[str, ...]
    doc: str


SCHEMA: dict[str, Key] = {
    "image": Key("uint8", ("T", "B", "V", "H", "W", "C"), "the observation the step's action was chosen from"),
    "proprio": Key("float32", ("T", "B", "P"), "proprioception at that observation"),
    "instruction": Key("str", ("B",), "the task instruction (fixed within an episode)"),
    "action_tokens": Key("int64", ("T", "B", "K", "A"), "the sampled action tokens (the learner scores these)"),
    "actions": Key("float32", ("T", "B", "K", "A"), "the env actions they decode to (un-normalised)"),
    "chain": Key(
        "float32",
        ("T", "B", "S", "K", "A"),
        "a flow policy's denoising chain, noise to action (S = denoise steps + 1; S = 0 for token policies)",
    ),
    "denoise_step": Key(
        "int64",
        ("T", "B"),
        "the one stochastic step of a flow policy's chain (pi0 with joint_logprob=false); -1: every step, or none",
    ),
    "logprob": Key("float32", ("T", "B", "K", "A"), "per-token log-probs at sampling time"),
    "value": Key(
        "float32",
        ("T", "B", "K"),
        "V before each env step of the chunk at sampling time, all read from the decision's observation "
        "([..., 0] is V(s_t); 0 for a policy without a value head)",
    ),
    "next_value": Key(
        "float32",
        ("T", "B", "K"),
        "V after each env step: the next valid entry of `value` in env-step order (env_major) inside an "
        "episode, V(final obs) at the step where it was truncated, 0 where it terminated and at steps not run",
    ),
    "reward": Key("float32", ("T", "B", "K"), "the env's reward of each env step of the chunk (0 at steps not run)"),
    "terminated": Key("bool", ("T", "B"), "the episode ended at this step by success (no bootstrap)"),
    "truncated": Key("bool", ("T", "B"), "the episode was cut at this step (bootstrap from next_value)"),
    "mask": Key("bool", ("T", "B"), "the step belongs to the env's episode"),
    "steps": Key("int64", ("T", "B"), "env steps the decision ran: K, fewer where its episode ended, 0 after"),
    "policy_version": Key("int64", ("T", "B"), "the version of the weights that chose the action"),
    "group_id": Key("int64", ("B",), "envs with the same id share task and initial state (GRPO)"),
    "task": Key("str", ("B",), "the task name"),
    "success": Key("bool", ("B",), "the episode succeeded"),
}


def gather_obs(obs: dict[str, Any], index: Any) -> dict[str, Any]:
    """The rows ``index`` of an observation dict as a policy input dict.

    ``index`` selects along the leading dim(s) of ``obs["image"]`` / ``obs["proprio"]``: an int array ``[N]``, a
    bool mask, or a ``(t, b)`` pair of int arrays ``[N]`` for time-major ``[T, B, ...]`` arrays (instructions,
    one per env, then by ``b``).
    """
    if isinstance(index, tuple):
        index = tuple(np.asarray(i) for i in index)
        rows = index[1]
    else:
        index = np.asarray(index)
        index = rows = index.nonzero()[0] if index.dtype == bool else index
    return {
        "image": obs["image"][index],
        "proprio": obs["proprio"][index],
        "instruction": [obs["instruction"][i] for i in rows],
    }


def ran_steps(steps: torch.Tensor, k: int) -> torch.Tensor:
    """``[T, B, K]`` which env steps of each decision's K-action chunk ran, from ``steps [T, B]`` (its first ones)."""
    return torch.arange(k) < steps.unsqueeze(-1)


def env_major(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, K]`` per env step of each decision -> ``[T*K, B]``, the episode's env steps in time order."""
    t, b, k = x.shape
    return x.permute(0, 2, 1).reshape(t * k, b)


def decision_major(x: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of ``env_major``: ``[T*K, B]`` -> ``[T, B, K]``."""
    return x.reshape(-1, k, x.shape[1]).permute(0, 2, 1)


def _dtype(x: Any) -> str:
    if isinstance(x, list):
        return "str" if all(isinstance(s, str) for s in x) else "list"
    return str(x.dtype).removeprefix("torch.")


def _shape(x: Any) -> tuple[int, ...]:
    return (len(x),) if isinstance(x, list) else tuple(x.shape)


@dataclass
class Batch:
    """A rollout, time-major; the fields are ``SCHEMA``'s keys (see there for dtypes, dims and meaning)."""

    image: np.ndarray
    proprio: np.ndarray
    instruction: list[str]
    action_tokens: torch.Tensor
    actions: torch.Tensor
    chain: torch.Tensor
    denoise_step: torch.Tensor
    logprob: torch.Tensor
    value: torch.Tensor
    next_value: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    mask: torch.Tensor
    steps: torch.Tensor
    policy_version: torch.Tensor
    group_id: torch.Tensor
    task: list[str]
    success: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)  # collection-wide figures, e.g. success before filtering

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> dict[str, int]:
        """Every key has its declared dtype and rank, and each named dim one size; returns ``{dim: size}``.

        Raises ``ValueError`` naming the key, what it holds and what ``SCHEMA`` declares.
        """
        sizes: dict[str, int] = {}
        for name, key in SCHEMA.items():
            x = getattr(self, name)
            shape, dims = _shape(x), f"[{', '.join(key.dims)}]"
            if _dtype(x) != key.dtype or len(shape) != len(key.dims):
                raise ValueError(
                    f"batch key {name!r} is {_dtype(x)} {list(shape)}; the schema declares {key.dtype} {dims}"
                )
            for dim, size in zip(key.dims, shape):
                if sizes.setdefault(dim, size) != size:
                    raise ValueError(
                        f"batch key {name!r} has {dim}={size}, other keys {dim}={sizes[dim]} (dims {dims})"
                    )
        return sizes

    @property
    def valid(self) -> torch.Tensor:
        """``[T, B, K]`` the env steps each decision's chunk ran (its first ``steps``)."""
        return ran_steps(self.steps, self.reward.shape[-1])

    @property
    def length(self) -> torch.Tensor:
        """``[B]`` each episode's env steps (the sum of its decisions' ``steps``)."""
        return self.steps.sum(0)

    def observation(self, t: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
        """The observations of steps ``(t[i], b[i])`` (int tensors ``[N]``) as a policy input dict of N rows."""
        return gather_obs(vars(self), (t.numpy(), b.numpy()))

    def select(self, cols: list[int]) -> Batch:
        """The episodes ``cols`` (env columns) of this batch."""
        idx = torch.as_tensor(cols, dtype=torch.long)

        def take(name: str, x: Any) -> Any:
            if isinstance(x, list):
                return [x[c] for c in cols]
            axis = SCHEMA[name].dims.index("B")
            return x[(slice(None),) * axis + ((cols,) if isinstance(x, np.ndarray) else (idx,))]

        return Batch(**{name: take(name, getattr(self, name)) for name in SCHEMA})

    def groups_within(self, group_size: int, low: float, high: float) -> Batch:
        """The groups (runs of ``group_size`` env columns) whose success rate is in ``[low, high]``: dynamic
        sampling drops the groups whose outcomes all agree, which carry no GRPO advantage."""
        rate = self.success.float().reshape(-1, group_size).mean(1)
        ok = ((rate >= low) & (rate <= high)).repeat_interleave(group_size)
        return self.select(ok.nonzero().squeeze(1).tolist())


def _pad_time(x: Any, t: int) -> Any:
    """``x`` ``[T', ...]`` zero-padded to ``[t, ...]``."""
    if x.shape[0] == t:
        return x
    if isinstance(x, np.ndarray):
        return np.concatenate([x, np.zeros((t - x.shape[0], *x.shape[1:]), x.dtype)])
    return torch.cat([x, torch.zeros((t - x.shape[0], *x.shape[1:]), dtype=x.dtype)])


def concat_batches(batches: list[Batch]) -> Batch:
    """Episodes of several batches side by side (``[T_max, sum B]``; padding steps have mask false)."""
    batches = [b for b in batches if b.success.numel()]
    if not batches:
        raise ValueError("no episodes to concatenate")
    if len(batches) == 1:
        return batches[0]
    t_max = max(b.mask.shape[0] for b in batches)
    out = {}
    for name, key in SCHEMA.items():
        parts = [getattr(b, name) for b in batches]
        if key.dtype == "str":
            out[name] = [s for p in parts for s in p]
            continue
        if key.dims[0] == "T":
            parts = [_pad_time(p, t_max) for p in parts]
        axis = key.dims.index("B")
        out[name] = np.concatenate(parts, axis=axis) if isinstance(parts[0], np.ndarray) else torch.cat(parts, axis)
    return Batch(**out)
