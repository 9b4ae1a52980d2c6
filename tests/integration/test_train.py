"""`vlarl train` on MetaWorld with the tiny policy: end to end, resume equality, GRPO groups."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlarl import algorithms
from vlarl.cli import main
from vlarl.config import load_config
from vlarl.policies.openvla.checkpoint import save_pretrained
from vlarl.policies.openvla.factory import build_policy
from vlarl.trainer import Trainer

TASKS = ["reach-v3", "drawer-close-v3"]
SMALL = [
    "env.task_set=custom",
    "env.tasks=[reach-v3,drawer-close-v3]",
    "env.num_workers=0",
    "env.image_size=64",
    "env.max_episode_steps=6",
    "env.num_eval_init_states=1",
    "eval.trials_per_task=1",
    "eval.videos_per_task=0",
    "algo.minibatch_size=6",
    "algo.grad_accum=2",
]


@pytest.fixture(scope="module")
def start_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("start") / "policy"
    save_pretrained(build_policy("tiny", 4, instructions=["reach the goal position", "push the drawer closed"]), path)
    return path


def _cfg(tmp_path, start, *extra):
    return load_config(
        "train",
        overrides=[
            *SMALL,
            "trainer.init=checkpoint",
            f"policy.checkpoint={start}",
            f"run.output_dir={tmp_path}",
            *extra,
        ],
    )


@pytest.mark.parametrize("curriculum", ["none", "success"])
def test_resume_repeats_the_uninterrupted_run(tmp_path, start_checkpoint, curriculum):
    cfg = _cfg(
        tmp_path,
        start_checkpoint,
        "env.num_envs=2",
        "trainer.iterations=2",
        "trainer.save_every=1",
        "algo.epochs=2",
        "algo.lr_warmup_steps=50",  # the resumed run must also restore the learning-rate schedule
        f"trainer.curriculum={curriculum}",
    )
    full = Trainer(cfg, tmp_path / "full").train()["history"]
    resumed = Trainer(cfg, tmp_path / "resumed")
    resumed.load(tmp_path / "full" / "checkpoints" / "iter_000001")
    assert resumed.iteration == 1
    steps = resumed.learner.scheduler.last_epoch  # optimizer steps taken in iteration 0
    assert steps > 0 and resumed.learner.optimizer.param_groups[0]["lr"] == pytest.approx(
        cfg.algo.lr * (steps + 1) / 50
    )
    if curriculum == "success":  # the curriculum's memory is part of the checkpoint
        assert sum(len(h) for h in resumed.curriculum.state_dict().values()) == 2
        assert "rollout/task_weight/reach-v3" in full[0]
    again = resumed.train()["history"]
    assert len(again) == 1
    for key in ("train/policy/loss", "train/value/loss", "train/grad_norm", "train/policy/ratio_max", "env/steps"):
        assert again[0][key] == pytest.approx(full[1][key], rel=1e-5, abs=1e-7), key
    assert full[0]["train/policy/loss"] != full[1]["train/policy/loss"]  # iterations differ: the check has teeth


def test_time_budget_stop_checkpoints_the_evaluated_policy(tmp_path, start_checkpoint):
    extra = ["env.num_envs=2", "trainer.iterations=5", "trainer.save_every=3", "trainer.time_budget_min=1e-6"]
    summary = Trainer(_cfg(tmp_path, start_checkpoint, *extra), tmp_path / "budget").train()
    assert summary["iterations"] == 1  # the budget ends the run after its first iteration
    ckpt = tmp_path / "budget" / "checkpoints"
    assert (ckpt / "latest" / "CHECKPOINT").read_text().strip() == "iter_000001"
    assert (ckpt / "iter_000001" / "policy" / "config.json").is_file()


def test_grpo_groups_share_task_and_start(tmp_path, start_checkpoint):
    cfg = _cfg(
        tmp_path, start_checkpoint, "env.num_envs=4", "algo.name=grpo", "algo.group_size=2", "trainer.iterations=1"
    )
    trainer = Trainer(cfg, tmp_path / "grpo")
    batch = trainer.collect()
    assert batch.group_id.tolist() == [0, 0, 1, 1]
    assert batch.stats == {"success": batch.success.float().mean().item(), "episodes": 4}
    assert batch.task[0] == batch.task[1] and batch.task[2] == batch.task[3] and set(batch.task) == set(TASKS)
    assert (batch.image[0, 0] == batch.image[0, 1]).all() and not (batch.image[0, 1] == batch.image[0, 2]).all()
    batch.success = torch.tensor([True, False, False, False])
    row = trainer.log(batch, {})
    assert row[f"rollout/kept_success/{batch.task[0]}"] == 0.5 and row[f"rollout/kept_success/{batch.task[2]}"] == 0.0
    assert 100 < row["perf/rss_driver_mb"] < 20_000 and "perf/rss_env_worker_max_mb" not in row  # envs in-process
    adv, ret = trainer.advantages(batch)
    assert adv.shape == batch.value.shape and (adv[~batch.mask] == 0).all()
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    assert trainer.update(batch, torch.zeros_like(adv), ret) == {"update_skipped": 1.0}  # no signal: no step
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    one_group = torch.zeros_like(adv)
    one_group[:, :2] = 1.0
    metrics = trainer.update(batch, one_group, ret)  # zero-advantage steps are left out
    assert metrics["samples"] == batch.mask[:, :2].sum() and metrics["update_skipped"] == 0.0
    trainer.venv.close()


def test_fixed_states_repeat_every_iteration(tmp_path, start_checkpoint):
    states = ["drawer-close-v3@11", "reach-v3@7"]
    extra = ["env.num_envs=4", "algo.name=grpo", "algo.group_size=1", "trainer.fixed_states=[" + ",".join(states) + "]"]
    trainer = Trainer(_cfg(tmp_path, start_checkpoint, *extra), tmp_path / "fixed")
    first = trainer.collect()
    trainer.iteration = 7  # another iteration draws other seeds, except for the fixed states
    again = trainer.collect()
    trainer.venv.close()
    assert first.task == again.task == ["drawer-close-v3", "reach-v3", "drawer-close-v3", "reach-v3"]
    assert (first.image[0] == again.image[0]).all() and (first.image[0, 0] == first.image[0, 2]).all()
    assert (first.image[0, 1] == first.image[0, 3]).all()  # entry g % 2: envs 1 and 3 share reach-v3@7
    free = Trainer(_cfg(tmp_path, start_checkpoint, "env.num_envs=4", "algo.name=grpo", "algo.group_size=1"), tmp_path)
    free.iteration = 7
    other = free.collect()
    free.venv.close()
    assert not all((other.image[0, b] == again.image[0, b]).all() for b in range(4))  # the check has teeth
    for bad in ("reach-v3", "push-v3@1", "reach-v3@x"):
        with pytest.raises(ValueError, match="task@seed"):
            Trainer(_cfg(tmp_path, start_checkpoint, f"trainer.fixed_states=[{bad}]"), tmp_path)


def test_rounds_collect_several_episodes_per_env(tmp_path, start_checkpoint):
    extra = ["env.num_envs=4", "algo.name=grpo", "algo.group_size=2", "trainer.rounds=3"]
    trainer = Trainer(_cfg(tmp_path, start_checkpoint, *extra), tmp_path / "rounds")
    batch = trainer.collect()
    trainer.venv.close()
    assert batch.success.numel() == 12 and batch.stats["episodes"] == 12
    assert batch.group_id.tolist() == [0, 0, 1, 1, 4, 4, 5, 5, 8, 8, 9, 9]  # round r's groups start at r x envs
    assert len({batch.image[0, b].tobytes() for b in range(12)}) == 6  # six groups, each its own initial state
    with pytest.raises(ValueError, match="trainer.rounds"):
        Trainer(_cfg(tmp_path, start_checkpoint, "trainer.rounds=0"), tmp_path)


def test_freeze_vision_leaves_the_towers_as_they_were(tmp_path, start_checkpoint):
    trainer = Trainer(_cfg(tmp_path, start_checkpoint, "env.num_envs=2", "algo.freeze_vision=true"), tmp_path / "fv")
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    batch = trainer.collect()
    trainer.venv.close()
    trainer.update(batch, *trainer.advantages(batch))
    changed = {k for k, v in trainer.policy.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("model.language_model.") for k in changed)  # the update did train
    assert not any(k.startswith("model.vision_backbone.") for k in changed)


def test_update_fraction_trains_on_a_uniform_share_of_the_steps(tmp_path, start_checkpoint):
    trainer = Trainer(_cfg(tmp_path, start_checkpoint, "env.num_envs=2", "algo.update_fraction=0.5"), tmp_path / "f")
    batch = trainer.collect()
    trainer.venv.close()
    full = int(batch.mask.sum())
    assert trainer.update(batch, *trainer.advantages(batch))["samples"] == round(full / 2)
    trainer.cfg.algo.update_fraction = 1.0
    assert trainer.update(batch, *trainer.advantages(batch))["samples"] == full
    with pytest.raises(ValueError, match="update_fraction"):
        Trainer(_cfg(tmp_path, start_checkpoint, "algo.update_fraction=0"), tmp_path)


def test_kl_penalty_holds_zero_advantage_steps(tmp_path, start_checkpoint):
    extra = ["env.num_envs=4", "algo.name=grpo", "algo.group_size=2", "algo.kl_coef=0.1", "trainer.iterations=1"]
    trainer = Trainer(_cfg(tmp_path, start_checkpoint, *extra), tmp_path / "kl")
    batch = trainer.collect()
    trainer.venv.close()
    adv, ret = trainer.advantages(batch)
    metrics = trainer.update(batch, torch.zeros_like(adv), ret)  # no advantage signal: the KL term still trains
    assert metrics["update_skipped"] == 0.0 and metrics["samples"] == batch.mask.sum()
    assert metrics["policy/kl_ref"] == pytest.approx(0.0, abs=1e-6)  # no gradient at its reference: nothing moved
    after = trainer.update(batch, torch.ones_like(adv), ret)  # one step moved the policy away from its reference
    assert after["policy/kl_ref"] > 1e-6


def test_episode_step_weight_balances_each_grpo_group(tmp_path, start_checkpoint):
    extra = ["env.num_envs=4", "algo.name=grpo", "algo.group_size=2", "algo.step_weight=episode"]
    trainer = Trainer(_cfg(tmp_path, start_checkpoint, *extra), tmp_path / "weight")
    batch = trainer.collect()
    trainer.venv.close()
    lengths = [3, 6, 6, 2]  # a short success and a long failure in each group
    batch.mask = torch.arange(batch.mask.shape[0]).unsqueeze(1) < torch.tensor(lengths)
    batch.steps = batch.mask.long()  # one env step per decision
    batch.success = torch.tensor([True, False, False, True])
    adv, _ = trainer.advantages(batch)
    per_episode = adv[..., 0].sum(0)  # advantage-weighted step count of each episode
    a = 0.5 / 0.5**0.5  # grpo of [1, 0]: (1 - 0.5) / unbiased std
    torch.testing.assert_close(per_episode, torch.tensor([a, -a, -a, a]) * sum(lengths) / 4)
    torch.testing.assert_close(adv[0, 0, 0], torch.tensor(a * 17 / 4 / 3))
    trainer.cfg.algo.step_weight = "step"
    step_sums = trainer.advantages(batch)[0][..., 0].sum(0)
    torch.testing.assert_close(step_sums, torch.tensor([3 * a, -6 * a, -6 * a, 2 * a]))  # failures outweigh


def test_dynamic_sampling_reports_every_collected_episode(tmp_path, start_checkpoint):
    extra = ["env.num_envs=4", "algo.name=grpo", "algo.group_size=2", "algo.dynamic_sampling=true"]
    trainer = Trainer(_cfg(tmp_path, start_checkpoint, *extra, "algo.ds_max_rounds=2"), tmp_path / "ds")
    batch = trainer.collect()  # an untrained policy fails every 6-step episode: every group is dropped
    trainer.venv.close()
    assert not batch.success.any() and batch.success.numel() == 4  # the last round is trained on
    assert batch.stats == {"success": 0.0, "episodes": 8}  # both rounds are counted


def test_grpo_return_score_ranks_faster_successes_higher(tmp_path, start_checkpoint):
    extra = ["env.num_envs=4", "algo.name=grpo", "algo.group_size=2", "algo.score=return", "algo.gamma=0.9"]
    trainer = Trainer(_cfg(tmp_path, start_checkpoint, *extra), tmp_path / "return")
    batch = trainer.collect()
    trainer.venv.close()
    lengths, success = [3, 6, 6, 2], [True, True, False, True]
    batch.mask = torch.arange(batch.mask.shape[0]).unsqueeze(1) < torch.tensor(lengths)
    batch.reward = torch.zeros_like(batch.reward)
    for b, (n, ok) in enumerate(zip(lengths, success)):
        batch.reward[n - 1, b] = float(ok)  # sparse: 1 on the success step
    batch.success = torch.tensor(success)
    adv = trainer.advantages(batch)[0][..., 0]  # [T, B]: K = 1
    returns = torch.tensor([0.9**2, 0.9**5, 0.0, 0.9**1])
    torch.testing.assert_close(adv[0], algorithms.grpo(returns, batch.group_id))
    assert adv[0, 0] > 0 > adv[0, 1]  # both succeeded; the faster one is reinforced (a success score gives 0)
    assert adv[0, 0] == pytest.approx(1 / 2**0.5, rel=1e-4)  # std-normalised: a speed gap weighs as a success
    trainer.cfg.algo.group_std = False  # Dr. GRPO: score - group mean, a speed gap stays small
    adv = trainer.advantages(batch)[0][..., 0]  # [T, B]: K = 1
    speed, success_gap = (0.9**2 - 0.9**5) / 2, (0.9**1 - 0.0) / 2
    torch.testing.assert_close(adv[0], torch.tensor([speed, -speed, -success_gap, success_gap]))
    trainer.cfg.algo.neg_adv_weight = 0.25  # failures' (and slower successes') advantages shrink, the rest stay
    adv = trainer.advantages(batch)[0][..., 0]  # [T, B]: K = 1
    torch.testing.assert_close(adv[0], torch.tensor([speed, -speed / 4, -success_gap / 4, success_gap]))


def test_grpo_max_reward_score_ranks_episodes_by_their_best_step(tmp_path, start_checkpoint):
    extra = ["env.num_envs=4", "env.reward=dense", "algo.name=grpo", "algo.group_size=2", "algo.score=max_reward"]
    trainer = Trainer(_cfg(tmp_path, start_checkpoint, *extra), tmp_path / "score")
    batch = trainer.collect()
    adv = trainer.advantages(batch)[0][..., 0]  # [T, B]: K = 1
    steps = range(batch.reward.shape[0])
    best = [max(batch.reward[t, b].item() for t in steps if batch.mask[t, b]) for b in range(4)]
    assert len(set(best)) == 4  # shaped rewards differ between episodes: the check has teeth
    torch.testing.assert_close(adv[0], algorithms.grpo(torch.tensor(best), batch.group_id))
    trainer.venv.close()


def test_bad_algo_settings_fail_clearly(tmp_path, start_checkpoint):
    with pytest.raises(ValueError, match="multiple of algo.group_size"):
        Trainer(_cfg(tmp_path, start_checkpoint, "env.num_envs=3", "algo.name=grpo", "algo.group_size=2"), tmp_path)
    with pytest.raises(ValueError, match="algo.advantage='nope': choose one of"):
        Trainer(_cfg(tmp_path, start_checkpoint, "algo.advantage=nope"), tmp_path)
    with pytest.raises(ValueError, match="algo.score"):
        Trainer(_cfg(tmp_path, start_checkpoint, "algo.score=reward"), tmp_path)
    with pytest.raises(ValueError, match="neg_adv_weight"):
        Trainer(_cfg(tmp_path, start_checkpoint, "algo.neg_adv_weight=-1"), tmp_path)
    with pytest.raises(ValueError, match="algo.step_weight"):
        Trainer(_cfg(tmp_path, start_checkpoint, "algo.step_weight=trajectory"), tmp_path)
    with pytest.raises(ValueError, match="trainer.curriculum"):
        Trainer(_cfg(tmp_path, start_checkpoint, "trainer.curriculum=hard"), tmp_path)


def test_cli_train_end_to_end_from_demos_and_sft(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # demos and SFT caches go under ./data
    args = [
        "train",
        "env.task_set=custom",
        "env.tasks=[reach-v3]",
        "env.num_envs=2",
        "env.num_workers=1",
        "env.image_size=64",
        "env.max_episode_steps=8",
        "env.num_eval_init_states=1",
        "demos.episodes_per_task=1",
        "demos.keep=all",
        "sft.steps=2",
        "sft.batch_size=4",
        "sft.warmup_steps=1",
        "eval.trials_per_task=1",
        "eval.videos_per_task=0",
        "trainer.iterations=2",
        "trainer.save_every=2",
        "algo.minibatch_size=8",
        "run.output_dir=runs",
        "run.name=e2e",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "before and after RL" in out
    run = tmp_path / "runs" / "e2e"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 2 and len(summary["history"]) == 2
    assert summary["history"][0]["perf/rss_env_worker_max_mb"] > 50  # one env worker process, measured
    assert set(summary["after"]["per_task"]) == {"reach-v3"}
    assert (run / "checkpoints" / "iter_000002" / "policy" / "config.json").is_file()
    assert (run / "checkpoints" / "latest" / "CHECKPOINT").read_text().strip() == "iter_000002"
    assert list((run / "tb").glob("events.out.tfevents.*"))
    curve = Image.open(run / "learning_curve.png")
    assert curve.size == (640, 440) and len(np.unique(np.asarray(curve).reshape(-1, 3), axis=0)) > 3  # lines drawn
    assert "±" in out  # the before/after table carries standard errors
    # a second run reuses the cached SFT checkpoint, and trainer.resume=auto continues from latest
    assert main([*args[:-1], "run.name=e2e", "trainer.resume=auto", "trainer.iterations=3"]) == 0
    out = capsys.readouterr().out
    assert "SFT cached" in out and "resumed from" in out
    assert json.loads((run / "summary.json").read_text())["iterations"] == 3


def test_critic_warmup_changes_only_the_value_head(tmp_path, start_checkpoint):
    extra = ["env.num_envs=2", "trainer.iterations=1", "algo.critic_warmup=1", "algo.lr_warmup_steps=50"]
    trainer = Trainer(_cfg(tmp_path, start_checkpoint, *extra), tmp_path / "warm")
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    batch = trainer.collect()
    trainer.update(batch, *trainer.advantages(batch))
    changed = {k for k, v in trainer.policy.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("value_head.") for k in changed)
    policy_lr, value_lr = (g["lr"] for g in trainer.learner.optimizer.param_groups)
    algo = trainer.cfg.algo
    assert policy_lr == pytest.approx(algo.lr / 50) and value_lr == pytest.approx(algo.value_lr)  # warm-up not spent
    trainer.iteration = 1  # the first policy update takes the first warm-up step
    trainer.update(batch, *trainer.advantages(batch))
    assert trainer.learner.optimizer.param_groups[0]["lr"] == pytest.approx(
        algo.lr * (trainer.learner.scheduler.last_epoch + 1) / 50
    )
    assert trainer.learner.scheduler.last_epoch > 0
    trainer.venv.close()


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_checkpoint_stores_the_weights_once_and_restores_them_exactly(tmp_path, start_checkpoint, lora_rank):
    cfg = _cfg(tmp_path, start_checkpoint, "env.num_envs=2", f"policy.lora_rank={lora_rank}")
    trainer = Trainer(cfg, tmp_path / "run")
    batch = trainer.collect()
    trainer.venv.close()
    trainer.update(batch, *trainer.advantages(batch))
    path = trainer.save()
    export = sum(f.stat().st_size for f in (path / "policy").glob("*.safetensors"))
    rest = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    assert rest < 0.1 * export, f"{rest} bytes of weights beside a {export}-byte export"  # adapters and rng only
    fresh = Trainer(cfg, tmp_path / "fresh")
    fresh.venv.close()
    trained = trainer.policy.state_dict()
    assert any(not torch.equal(v, fresh.policy.state_dict()[k]) for k, v in trained.items())  # the update moved it
    fresh.load(path)
    for k, v in trained.items():
        assert torch.equal(v, fresh.policy.state_dict()[k]), k
