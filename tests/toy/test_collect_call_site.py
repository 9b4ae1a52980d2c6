"""What the trainer's collection stores is what ran: the env's actions per step, the policy version, the rewards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.toy.conftest import OFT, PI0, toy_train_config
from vlarl.trainer import Trainer


class Recording:
    """Passes a vector env through, keeping every chunk of actions it is sent and the rewards it returns."""

    def __init__(self, venv):
        self.venv, self.spec = venv, venv.spec
        self.sent, self.rewards, self.valid, self.ended, self.lengths = [], [], [], [], []

    def reset(self, seed=None, options=None):
        self.sent, self.rewards, self.valid, self.ended, self.lengths = [], [], [], [], []
        return self.venv.reset(seed=seed, options=options)

    def episode_lengths(self):
        """Per env, the ``episode_length`` the env reported when its first episode ended."""
        ended, lengths = np.stack(self.ended), np.stack(self.lengths)  # [T, B]
        return [int(lengths[ended[:, b].argmax(), b]) for b in range(ended.shape[1])]

    def step_chunk(self, actions):
        self.sent.append(np.array(actions))
        out = self.venv.step_chunk(actions)
        self.rewards.append(out[1])
        self.valid.append(out[4]["valid"])
        self.ended.append((out[2] | out[3]).any(1))
        self.lengths.append(out[4]["episode_length"])
        return out

    def rss_mb(self):
        return self.venv.rss_mb()

    def close(self):
        self.venv.close()


@pytest.mark.parametrize("family", ["openvla", "openvla_oft"])
def test_the_batch_holds_the_actions_sent_the_rewards_returned_and_the_version(
    tmp_path, fresh_policy, fresh_oft_policy, family
):
    start, k, extra = (fresh_policy, 1, ()) if family == "openvla" else (fresh_oft_policy, 2, OFT)
    trainer = Trainer(toy_train_config(start, "env.num_envs=16", "env.reward=dense", *extra), tmp_path / "run")
    trainer.venv = Recording(trainer.venv)
    trainer.iteration = 3  # as after three updates
    batch = trainer.collect()
    sent = torch.as_tensor(np.stack(trainer.venv.sent), dtype=torch.float32)  # [T, B, K, A]
    assert batch.check()["K"] == k and sent.shape == batch.actions.shape
    mask = batch.mask
    torch.testing.assert_close(batch.actions[mask], sent[mask], atol=1e-6, rtol=0)
    valid = torch.as_tensor(np.stack(trainer.venv.valid)) & mask.unsqueeze(-1)  # [T, B, K] the env steps run
    rewards = torch.as_tensor(np.stack(trainer.venv.rewards), dtype=torch.float32)  # [T, B, K]
    torch.testing.assert_close(batch.reward[valid], rewards[valid])
    assert (batch.reward[~valid] == 0).all()  # steps not run (after an end inside a chunk) carry no reward
    assert len(set(batch.reward[valid].tolist())) > 4  # dense rewards differ: the check has teeth
    assert (batch.policy_version == 3).all()
    assert batch.steps.tolist() == valid.sum(-1).tolist() and torch.equal(batch.valid, valid)
    assert batch.length.tolist() == trainer.venv.episode_lengths()  # the env's own count of env steps
    if k > 1:  # some episode ended inside a chunk: its remaining actions did not run
        assert ((batch.steps > 0) & (batch.steps < k)).any()
    decoded = trainer.policy.norm_stats.unnormalize(
        trainer.policy.action_tokenizer.decode(batch.action_tokens[mask].numpy())
    )
    np.testing.assert_allclose(batch.actions[mask].numpy(), decoded, atol=1e-6)  # the tokens decode to the actions
    trainer.venv.close()


def test_a_one_step_pi0_batch_records_the_drawn_steps_the_learner_scores(fresh_pi0_policy, tmp_path):
    """pi0 with joint_logprob=false: the batch keeps each decision's stochastic denoising step, and the learner's
    recomputation from the stored chain and step gives the rollout's log-probs (a ratio of 1 before any update)."""
    extra = (*PI0, "policy.pi0.joint_logprob=false", "env.num_envs=4", "algo.name=ppo")
    trainer = Trainer(toy_train_config(fresh_pi0_policy, *extra), tmp_path / "run")
    batch = trainer.collect()
    mask = batch.mask
    steps = batch.denoise_step[mask]
    assert ((steps >= 0) & (steps < 4)).all() and len(set(steps.tolist())) > 1
    t, b = mask.nonzero(as_tuple=True)
    policy = trainer.policy
    with torch.no_grad():
        logp = policy.evaluate(
            policy.prepare(batch.observation(t, b)), batch.action_tokens[t, b], 1.0, batch.chain[t, b], steps
        )[0]
    torch.testing.assert_close(logp, batch.logprob[t, b], atol=1e-4, rtol=0)
    trainer.venv.close()


def test_freeze_backbone_trains_pi0s_expert_and_leaves_its_prefix(fresh_pi0_policy, fresh_policy, tmp_path):
    """``algo.freeze_backbone``: the trainer's update moves the action expert and value head, not the VLM; the
    OpenVLA family, whose language model is its policy, refuses it."""
    extra = (*PI0, "env.num_envs=4", "algo.name=ppo", "algo.critic_warmup=0", "algo.freeze_backbone=true")
    trainer = Trainer(toy_train_config(fresh_pi0_policy, *extra), tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    batch = trainer.collect()
    trainer.venv.close()
    trainer.update(batch, *trainer.advantages(batch))
    changed = {k for k, v in trainer.policy.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("expert.") for k in changed) and any(k.startswith("value_head.") for k in changed)
    assert not any(k.startswith("model.") for k in changed)
    with pytest.raises(ValueError, match="freeze_backbone: the openvla family acts through its language model"):
        Trainer(toy_train_config(fresh_policy, "algo.freeze_backbone=true"), tmp_path / "refused")
