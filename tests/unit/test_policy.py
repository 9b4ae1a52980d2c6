"""The tiny OpenVLA policy: rollout/learner agreement, restricted sampling, padding, LoRA, SFT."""

import numpy as np
import pytest
import torch

from vlarl.policies.base import GREEDY, Sampling
from vlarl.policies.openvla.factory import build_policy
from vlarl.policies.openvla.lora import apply_lora, merged_copy
from vlarl.sft import lr_lambda


def _obs(b=3, seed=0, proprio=False):
    rng = np.random.default_rng(seed)
    obs = {
        "image": rng.integers(0, 256, (b, 1, 64, 64, 3), dtype=np.uint8),
        "instruction": ["reach the goal position", "push the puck", "open the drawer please now"][:b],
    }
    if proprio:
        obs["proprio"] = rng.normal(size=(b, 4)).astype(np.float32)
    return obs


@pytest.mark.parametrize("arch", ["tiny", "tiny-fused"])
@pytest.mark.parametrize("value_position", ["last_prompt", "first_action", "mean"])
def test_rollout_and_learner_logprobs_agree(arch, value_position):
    torch.manual_seed(0)
    policy = build_policy(arch, 4, value_position=value_position, proprio_dim=4).eval()
    out = policy.act(_obs(proprio=True), Sampling(temperature=1.3), torch.Generator().manual_seed(1))
    logp, entropy, value = policy.evaluate(out.inputs, out.tokens, temperature=1.3)
    assert not torch.allclose(policy.evaluate(out.inputs, out.tokens)[0], out.logprob)  # T=1 scores differ
    torch.testing.assert_close(logp, out.logprob, atol=1e-5, rtol=0)
    torch.testing.assert_close(value, out.value, atol=1e-5, rtol=0)
    assert logp.shape == entropy.shape == out.tokens.shape == (3, 1, 4) and value.shape == (3, 1)
    assert (entropy > 0).all() and (entropy <= np.log(256) + 1e-4).all()
    assert out.actions.shape == (3, 1, 4) and np.abs(out.actions).max() <= 1


def test_sampling_only_emits_action_ids_and_greedy_is_argmax():
    torch.manual_seed(0)
    policy = build_policy("tiny", 7).eval()
    first = policy.action_tokenizer.first_id
    out = policy.act(_obs(), Sampling(top_k=5), torch.Generator().manual_seed(0))
    assert out.tokens.min() >= first and out.tokens.max() < first + 256
    greedy = policy.act(_obs(), GREEDY)
    logp, _, _ = policy.evaluate(greedy.inputs, greedy.tokens)
    logits = policy.forward_tokens(greedy.inputs, greedy.tokens[:, 0])[0][..., first : first + 256]
    assert torch.equal(greedy.tokens[:, 0] - first, logits.argmax(-1))
    assert torch.equal(policy.act(_obs(), GREEDY).tokens, greedy.tokens)


def test_top_k_restricts_the_sampled_set():
    torch.manual_seed(0)
    policy = build_policy("tiny", 2).eval()
    sampled = policy.act(_obs(), Sampling(top_k=1), torch.Generator().manual_seed(3)).tokens
    assert torch.equal(sampled, policy.act(_obs(), GREEDY).tokens)  # top-1 sampling is greedy


def test_left_padding_does_not_change_results():
    torch.manual_seed(0)
    policy = build_policy("tiny", 4).eval()
    obs = _obs()
    batch = policy.act(obs, GREEDY)
    for i in range(3):
        single = {k: v[i : i + 1] for k, v in obs.items()}
        one = policy.act(single, GREEDY)
        assert torch.equal(one.tokens[0], batch.tokens[i])
        torch.testing.assert_close(one.logprob[0], batch.logprob[i], atol=1e-5, rtol=0)


def test_lora_trains_only_adapters_and_heads_and_merges_exactly():
    torch.manual_seed(0)
    policy = build_policy("tiny", 4)
    n = apply_lora(policy, rank=4, alpha=8, targets=["q_proj", "v_proj"], train_projector=False)
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name.startswith("value_head.") for name in trainable)
    assert n == sum(p.numel() for p in policy.parameters() if p.requires_grad)
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    out = policy.act(_obs())
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        logp, _, value = policy.evaluate(out.inputs, out.tokens)
        (-logp.sum() + value.pow(2).sum()).backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {name for name, p in policy.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= trainable
    assert any("lora_B" in name for name in changed)
    policy.eval()
    merged = merged_copy(policy)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    for x, y in zip(policy.evaluate(out.inputs, out.tokens), merged.evaluate(out.inputs, out.tokens)):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_sft_overfits_one_small_batch():
    torch.manual_seed(0)
    policy = build_policy("tiny", 4)
    obs = _obs()
    targets = policy.encode_actions(np.random.default_rng(0).uniform(-1, 1, (3, 1, 4)))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    inputs = policy.prepare(obs)
    first = None
    for _ in range(60):
        loss, metrics = policy.sft_loss(inputs, targets)
        first = first if first is not None else loss.item()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert first > 5.0  # ~log(vocab) at initialisation
    assert loss.item() < 0.1 and metrics["token_accuracy"] == 1.0


def test_one_step_family_rejects_chunks():
    policy = build_policy("tiny", 4).eval()
    out = policy.act(_obs())
    with pytest.raises(ValueError, match=r"tokens \[B, 1, A=4\], got \[3, 2, 4\]"):
        policy.evaluate(out.inputs, out.tokens.repeat(1, 2, 1))


def test_param_groups_split_value_head_and_critic_from_the_policy():
    for critic in ("shared", "separate"):
        policy = build_policy("tiny", 4, critic=critic)
        groups = policy.param_groups()
        value = {id(p) for p in groups["value"]}
        assert value == {id(p) for m in (policy.value_head, policy.critic) if m is not None for p in m.parameters()}
        assert not value & {id(p) for p in groups["policy"]}
        assert len(groups["policy"]) + len(groups["value"]) == len(list(policy.parameters()))
    policy.freeze_vision()
    frozen = {id(p) for p in policy.model.vision_backbone.parameters()}
    assert not frozen & {id(p) for g in policy.param_groups().values() for p in g}


def test_lr_schedule_hand_values():
    f = lr_lambda(warmup=4, total=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


def test_unknown_arch_and_value_position():
    with pytest.raises(ValueError, match="archs: tiny, tiny-fused, micro, openvla-7b"):
        build_policy("huge", 4)
    with pytest.raises(ValueError, match="value_position"):
        build_policy("tiny", 4, value_position="cls")


@pytest.mark.parametrize("value_position", ["last_prompt", "first_action"])
def test_separate_critic_agrees_and_round_trips(tmp_path, value_position):
    from vlarl.policies.openvla.checkpoint import load_pretrained, save_pretrained

    torch.manual_seed(0)
    policy = build_policy("tiny", 4, critic="separate", value_position=value_position).eval()
    assert policy.critic is not None and policy.critic is not policy.model
    with torch.no_grad():  # make the critic differ from the policy's backbone
        for p in policy.critic.parameters():
            p.add_(0.01 * torch.randn_like(p))
    out = policy.act(_obs(), generator=torch.Generator().manual_seed(0))
    logp, _, value = policy.evaluate(out.inputs, out.tokens)
    torch.testing.assert_close(value, out.value, atol=1e-5, rtol=0)
    shared = build_policy("tiny", 4, value_position=value_position).eval()
    shared.load_state_dict({k: v for k, v in policy.state_dict().items() if not k.startswith("critic.")})
    assert not torch.allclose(shared.evaluate(out.inputs, out.tokens)[2], value)  # the critic is what is read
    save_pretrained(policy, tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt").eval()
    assert loaded.critic is not None
    torch.testing.assert_close(loaded.evaluate(out.inputs, out.tokens)[2], value, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["siglip", "dinov2_reg"])
def test_vision_tower_mlp_width_follows_the_spec(kind):
    from vlarl.policies.openvla.vision import VisionTower, VisionTowerSpec

    registers = 4 if kind == "dinov2_reg" else 0
    spec = VisionTowerSpec(kind, 32, 1, 2, 96, 8, 16, registers=registers)  # 3 x width: not DINOv2's default 4
    widths = {tuple(p.shape) for n, p in VisionTower(spec).named_parameters() if "fc1.weight" in n}
    assert widths == {(96, 32)}
    if kind == "dinov2_reg":  # its config takes an integer mlp_ratio only
        with pytest.raises(ValueError, match="multiple of the width 32"):
            VisionTower(VisionTowerSpec(kind, 32, 1, 2, 48, 8, 16, registers=registers))


def test_family_registry_dispatches_and_names_the_registered_families():
    import dataclasses

    from vlarl.config import load_config
    from vlarl.policies import families, make_policy, register_family

    cfg = load_config("sft", overrides=["policy.arch=micro"]).policy
    with pytest.raises(ValueError, match="unknown policy family 'pi9'; families: openvla"):
        make_policy(dataclasses.replace(cfg, family="pi9"), 2)
    built = []
    register_family("echo", lambda c, *args: built.append(args) or build_policy("micro", args[0]))
    try:
        policy = make_policy(dataclasses.replace(cfg, family="echo"), 2, 0, None, ["go"])
        assert built == [(2, 0, None, ["go"])] and policy.action_dim == 2 and "echo" in families()
    finally:
        from vlarl import policies

        policies._FAMILIES.pop("echo")
