"""Every section is validated at load: a corpus of bad configs, each naming the key, the value and what is valid."""

from __future__ import annotations

import dataclasses
import re

import pytest

from vlarl import algorithms, policies
from vlarl.cli import main
from vlarl.config import load_config
from vlarl.config.loader import ConfigError
from vlarl.config.schema import AlgoConfig, PolicyConfig

# (command, override, the key and value the message names, what it says is valid)
BAD = [
    ("train", "algo.clip_low=-1", "algo.clip_low=-1.0", "> 0 and < 1"),
    ("train", "algo.clip_low=1.5", "algo.clip_low=1.5", "> 0 and < 1"),
    ("train", "algo.clip_high=0", "algo.clip_high=0.0", "> 0"),
    ("train", "algo.clip_c=0.5", "algo.clip_c=0.5", "0 (off) or > 1"),
    ("train", "algo.name=a2c", "algo.name='a2c'", "'ppo', 'grpo'"),
    ("train", "algo.advantage=vtrace", "algo.advantage='vtrace'", "'gae', 'grpo', 'rloo', 'reinforce_pp'"),
    ("train", "algo.score=reward", "algo.score='reward'", "'success', 'return', 'max_reward'"),
    ("train", "algo.gamma=1.2", "algo.gamma=1.2", ">= 0 and <= 1"),
    ("train", "algo.lam=-0.1", "algo.lam=-0.1", ">= 0 and <= 1"),
    ("train", "algo.group_size=0", "algo.group_size=0", ">= 1"),
    ("train", "algo.logprob_granularity=step", "algo.logprob_granularity='step'", "'token', 'action', 'chunk'"),
    ("train", "algo.agg=sum", "algo.agg='sum'", "'token-mean'"),
    ("train", "algo.step_weight=token", "algo.step_weight='token'", "'step', 'episode'"),
    ("train", "algo.value_loss=l1", "algo.value_loss='l1'", "'squared', 'huber'"),
    ("train", "algo.kl_kind=k4", "algo.kl_kind='k4'", "'k1', 'k2', 'k3'"),
    ("train", "algo.epochs=0", "algo.epochs=0", ">= 1"),
    ("train", "algo.update_fraction=0", "algo.update_fraction=0.0", "> 0 and <= 1"),
    ("train", "algo.update_fraction=1.5", "algo.update_fraction=1.5", "> 0 and <= 1"),
    ("train", "algo.minibatch_size=0", "algo.minibatch_size=0", ">= 1"),
    ("train", "algo.lr=0", "algo.lr=0.0", "> 0"),
    ("train", "algo.grad_clip=0", "algo.grad_clip=0.0", "> 0"),
    ("train", "algo.target_kl=-1", "algo.target_kl=-1.0", ">= 0"),
    ("train", "algo.ds_high=2", "algo.ds_high=2.0", ">= 0 and <= 1"),
    ("train", "algo.neg_adv_weight=-0.5", "algo.neg_adv_weight=-0.5", ">= 0 and <= 1"),
    ("train", "trainer.rounds=0", "trainer.rounds=0", ">= 1"),
    ("train", "trainer.curriculum=random", "trainer.curriculum='random'", "'none', 'success'"),
    ("train", "trainer.init=scratch", "trainer.init='scratch'", "'sft', 'checkpoint'"),
    ("train", "trainer.temperature=0", "trainer.temperature=0.0", "> 0"),
    ("train", "trainer.save_every=0", "trainer.save_every=0", ">= 1"),
    ("train", "trainer.curriculum_floor=1.5", "trainer.curriculum_floor=1.5", ">= 0 and <= 1"),
    ("demos", "demos.episodes_per_task=-1", "demos.episodes_per_task=-1", ">= 1"),
    ("demos", "demos.keep=failures", "demos.keep='failures'", "'success', 'all'"),
    ("demos", "demos.action_noise=-0.1", "demos.action_noise=-0.1", ">= 0"),
    ("demos", "env.num_envs=-3", "env.num_envs=-3", ">= 1"),
    ("demos", "env.num_workers=-1", "env.num_workers=-1", ">= 0"),
    ("demos", "env.image_size=8", "env.image_size=8", ">= 16 and <= 512"),
    ("demos", "env.image_size=1024", "env.image_size=1024", ">= 16 and <= 512"),
    ("demos", "env.reward=exotic", "env.reward='exotic'", "'sparse', 'dense', 'shaped'"),
    ("demos", "env.render_meshes=low", "env.render_meshes='low'", "'full', 'simplified'"),
    ("demos", "env.action_repeat=0", "env.action_repeat=0", ">= 1"),
    ("demos", "env.max_episode_steps=0", "env.max_episode_steps=0", ">= 1"),
    ("sft", "sft.steps=0", "sft.steps=0", ">= 1"),
    ("sft", "sft.min_lr_ratio=2", "sft.min_lr_ratio=2.0", ">= 0 and <= 1"),
    ("eval", "eval.temperature=-1", "eval.temperature=-1.0", "> 0"),
    ("sft", "policy.top_p=0", "policy.top_p=0.0", "> 0 and <= 1"),
    ("sft", "policy.precision=fp16", "policy.precision='fp16'", "'auto', 'fp32', 'bf16'"),
    (
        "sft",
        "policy.openvla.value_position=cls",
        "policy.openvla.value_position='cls'",
        "'last_prompt', 'first_action', 'mean'",
    ),
    ("sft", "policy.openvla.critic=twin", "policy.openvla.critic='twin'", "'shared', 'separate'"),
    ("sft", "policy.family=pi1", "policy.family='pi1'", "'openvla', 'openvla_oft', 'pi0'"),
    ("sft", "policy.openvla_oft.chunk_len=0", "policy.openvla_oft.chunk_len=0", ">= 1"),
    ("sft", "policy.openvla_oft.action_head=mse", "policy.openvla_oft.action_head='mse'", "'discrete', 'l1'"),
    ("sft", "policy.pi0.noise_method=ode", "policy.pi0.noise_method='ode'", "'flow_sde', 'flow_noise'"),
    ("sft", "policy.pi0.noise_level=0", "policy.pi0.noise_level=0", "> 0"),
    ("sft", "policy.device=tpu", "policy.device='tpu'", "auto, cpu, cuda or cuda:<n>"),
    ("eval", "eval.trials_per_task=0", "eval.trials_per_task=0", ">= 1"),
    ("eval", "eval.videos_per_task=-2", "eval.videos_per_task=-2", ">= 0"),
    ("eval", "run.threads=-1", "run.threads=-1", ">= 0"),
]


@pytest.mark.parametrize(("command", "override", "named", "valid"), BAD, ids=[b[1] for b in BAD])
def test_bad_value_is_refused_at_load_naming_key_value_and_what_is_valid(command, override, named, valid):
    with pytest.raises(ConfigError) as err:
        load_config(command, overrides=[override])
    line = next(x for x in str(err.value).splitlines() if named.split("=")[0] + "=" in x)
    assert line.strip().startswith(named) and valid in line, str(err.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as err:
        load_config("train", overrides=["demos.episodes_per_task=-1", "algo.clip_low=-1", "env.num_envs=-3"])
    assert re.findall(r"^  (\S+)=", str(err.value), re.M) == [
        "env.num_envs",
        "demos.episodes_per_task",
        "algo.clip_low",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["algo.name=grpo", "algo.group_size=4", "env.num_envs=6"],
            "env.num_envs=6: must be a multiple of algo.group_size=4",
        ),
        (["algo.ds_low=0.8", "algo.ds_high=0.2"], "algo.ds_low=0.8: must be <= algo.ds_high=0.2"),
        (["env.gripper=openvla"], "env.gripper='openvla': only the libero backend converts the gripper"),
        (["env.backend=toy", "env.reward=shaped"], "env.reward='shaped': only the metaworld backend shapes"),
        (
            ["eval.trials_per_task=60", "env.num_eval_init_states=50"],
            "eval.trials_per_task=60: must be <= env.num_eval",
        ),
        (
            ["policy.family=openvla_oft", "policy.openvla_oft.chunk_len=16", "env.max_episode_steps=10"],
            "policy.openvla_oft.chunk_len=16: must be <= env.max_episode_steps=10",
        ),
        (
            ["policy.family=openvla_oft", "policy.openvla_oft.action_head=l1"],
            "policy.openvla_oft.action_head='l1': RL trains the discrete head",
        ),
        (
            ["policy.family=pi0", "policy.pi0.chunk_len=16", "env.max_episode_steps=10"],
            "policy.pi0.chunk_len=16: must be <= env.max_episode_steps=10",
        ),
        (
            ["algo.reward_granularity=action", "algo.logprob_granularity=chunk"],
            "algo.reward_granularity='action': each action has its own advantage",
        ),
    ],
)
def test_constraints_between_sections(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("train", overrides=overrides)


def test_choices_are_the_registered_ones():
    fields = {f.name: f for f in dataclasses.fields(AlgoConfig)}
    assert set(fields["advantage"].metadata["choices"]) - {""} == set(algorithms.ADVANTAGES)
    assert set(fields["policy_loss"].metadata["choices"]) == set(algorithms.POLICY_LOSSES)
    family = {f.name: f for f in dataclasses.fields(PolicyConfig)}["family"]
    assert set(family.metadata["choices"]) == set(policies.families())
    assert all(hasattr(PolicyConfig(), name) for name in policies.families())  # each family has its section


def test_print_config_validates(capsys):
    assert main(["train", "--print-config", "algo.clip_low=-1"]) == 2
    assert "algo.clip_low=-1.0: must be > 0 and < 1" in capsys.readouterr().out
