"""Pure-function core of PPO/GRPO-style RL: advantage estimators and losses (torch only)."""

from vlarl.algorithms.advantages import (
    ADVANTAGES,
    gae,
    get_advantage,
    grpo,
    normalize,
    register_advantage,
    reinforce_pp,
    rloo,
)
from vlarl.algorithms.losses import (
    AGG_MODES,
    KL_KINDS,
    POLICY_LOSSES,
    aggregate,
    entropy_bonus,
    explained_variance,
    get_policy_loss,
    kl_penalty,
    masked_mean,
    ppo_policy_loss,
    register_policy_loss,
    value_loss,
)

__all__ = [
    "ADVANTAGES",
    "AGG_MODES",
    "KL_KINDS",
    "POLICY_LOSSES",
    "aggregate",
    "entropy_bonus",
    "explained_variance",
    "gae",
    "get_advantage",
    "get_policy_loss",
    "grpo",
    "kl_penalty",
    "masked_mean",
    "normalize",
    "ppo_policy_loss",
    "register_advantage",
    "register_policy_loss",
    "reinforce_pp",
    "rloo",
    "value_loss",
]
