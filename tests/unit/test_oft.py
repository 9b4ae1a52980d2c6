"""The OpenVLA-OFT family: one-pass chunk decoding, rollout/learner agreement, SFT, checkpoints, bad input."""

import json

import numpy as np
import pytest
import torch

from tests.unit.chunk_obs import INSTRUCTIONS, observations
from vlarl.config import load_config
from vlarl.policies import make_policy
from vlarl.policies.base import Sampling
from vlarl.policies.openvla.factory import build_policy
from vlarl.policies.openvla_oft import OFTPolicy
from vlarl.policies.openvla_oft.policy import key_padding_attention


def _oft(k=3, seed=0, **kw):
    torch.manual_seed(seed)
    return build_policy("micro", 4, instructions=INSTRUCTIONS, cls=OFTPolicy, chunk_len=k, proprio_dim=4, **kw).eval()


def test_key_padding_attention_by_hand():
    mask = torch.tensor([[0, 1, 1]])  # one left pad
    allowed = key_padding_attention(mask, torch.float32)[0, 0] == 0
    assert allowed.tolist() == [[True, True, True], [False, True, True], [False, True, True]]


@pytest.mark.parametrize("value_position", ["last_prompt", "first_action", "mean"])
def test_one_pass_logprobs_equal_the_learners_with_mixed_prompt_lengths(value_position):
    policy = _oft(value_position=value_position)
    obs = observations()
    assert len(set(policy.prepare(obs)["attention_mask"].sum(1).tolist())) > 1  # prompts of different lengths
    out = policy.act(obs, Sampling(temperature=1.3), torch.Generator().manual_seed(1))
    assert out.actions.shape == (3, 3, 4) and out.tokens.shape == out.logprob.shape == (3, 3, 4)
    assert out.value.shape == (3, 3)  # V before each of the chunk's 3 env steps
    logp, entropy, value = policy.evaluate(out.inputs, out.tokens, temperature=1.3)
    torch.testing.assert_close(logp, out.logprob, atol=1e-5, rtol=0)
    torch.testing.assert_close(value, out.value, atol=1e-5, rtol=0)
    assert (entropy > 0).all() and (entropy <= np.log(256) + 1e-4).all()
    # each row alone (no padding) scores as in the padded batch
    for b in range(3):
        alone = policy.prepare({k: v[b : b + 1] for k, v in obs.items()})
        row_logp, _, row_value = policy.evaluate(alone, out.tokens[b : b + 1], temperature=1.3)
        torch.testing.assert_close(row_logp, logp[b : b + 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(row_value, value[b : b + 1], atol=1e-5, rtol=0)


def test_the_slots_attend_to_each_other_and_decode_independently():
    """Slot outputs depend on how many slots there are (bidirectional), not on the tokens being scored."""
    policy = _oft(k=3)
    inputs = policy.prepare(observations())
    three = policy._parallel(policy.model, inputs)[0]
    policy.chunk_len = 1
    one = policy._parallel(policy.model, inputs)[0]
    assert three.shape[1] == 12 and one.shape[1] == 4
    assert (three[:, :4] - one).abs().max() > 1e-3  # the later slots change the first action's logits
    policy.chunk_len = 3
    tokens = policy.act(observations()).tokens
    other = tokens.clone()
    other[:, 2] = policy.action_tokenizer.first_id  # a different last action
    logp, _, _ = policy.evaluate(inputs, tokens)
    logp_other, _, _ = policy.evaluate(inputs, other)
    torch.testing.assert_close(logp[:, :2], logp_other[:, :2])  # earlier actions' scores are unchanged


def test_greedy_chunk_is_the_argmax_of_every_slot():
    policy = _oft()
    out = policy.act(observations(), Sampling(greedy=True))
    logits = policy._parallel(policy.model, out.inputs)[0]
    first = policy.action_tokenizer.first_id
    best = logits[..., first : first + 256].argmax(-1) + first
    assert torch.equal(out.tokens.flatten(1), best)


def test_sft_lowers_the_loss_on_a_fixed_batch():
    policy = _oft().train()
    inputs = policy.prepare(observations())
    targets = policy.encode_actions(np.random.default_rng(0).uniform(-1, 1, (3, 3, 4)))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    first, _ = policy.sft_loss(inputs, targets)
    for _ in range(40):
        loss, metrics = policy.sft_loss(inputs, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert metrics["loss"] < 0.5 * first.item()


def test_wrong_token_shapes_are_refused():
    policy = _oft(k=3)
    inputs = policy.prepare(observations())
    with pytest.raises(ValueError, match=r"openvla_oft scores tokens \[B, K=3, A=4\], got \[3, 1, 4\]"):
        policy.evaluate(inputs, torch.zeros(3, 1, 4, dtype=torch.long))


def _cfg(*overrides):
    return load_config("sft", overrides=["policy.family=openvla_oft", "policy.arch=micro", *overrides]).policy


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    policy = make_policy(_cfg("policy.openvla_oft.chunk_len=2", "policy.use_proprio=true"), 4, 4, None, INSTRUCTIONS)
    policy.eval()
    policy.save(tmp_path / "oft")
    saved = json.loads((tmp_path / "oft" / "config.json").read_text())["vlarl"]
    assert saved["family"] == "openvla_oft" and saved["chunk_len"] == 2
    loaded = make_policy(_cfg("policy.openvla_oft.chunk_len=2", f"policy.checkpoint={tmp_path / 'oft'}"), 4).eval()
    assert isinstance(loaded, OFTPolicy) and loaded.chunk_len == 2
    inputs = policy.prepare(observations())
    want = policy._parallel(policy.model, inputs)
    got = loaded._parallel(loaded.model, loaded.prepare(observations()))
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    copy = make_policy(_cfg("policy.openvla_oft.chunk_len=2", "policy.use_proprio=true"), 4, 4, None, INSTRUCTIONS)
    copy.load(tmp_path / "oft")
    torch.testing.assert_close(copy._parallel(copy.model, inputs)[0], want[0], atol=0, rtol=0)


def test_a_checkpoint_of_another_family_or_chunk_length_is_refused(tmp_path):
    make_policy(_cfg("policy.openvla_oft.chunk_len=2"), 4, 0, None, INSTRUCTIONS).save(tmp_path / "oft")
    make_policy(_cfg("policy.family=openvla"), 4, 0, None, INSTRUCTIONS).save(tmp_path / "ar")
    with pytest.raises(ValueError, match="holds a openvla checkpoint; policy.family=openvla_oft cannot load it"):
        make_policy(_cfg(f"policy.checkpoint={tmp_path / 'ar'}"), 4)
    with pytest.raises(ValueError, match="holds a openvla_oft checkpoint; policy.family=openvla cannot load it"):
        make_policy(_cfg("policy.family=openvla", f"policy.checkpoint={tmp_path / 'oft'}"), 4)
    with pytest.raises(ValueError, match=r"decodes chunks of 2; policy.openvla_oft.chunk_len=4"):
        make_policy(_cfg("policy.openvla_oft.chunk_len=4", f"policy.checkpoint={tmp_path / 'oft'}"), 4)
    with pytest.raises(ValueError, match="predicts 4-dim actions, the env has 7"):
        make_policy(_cfg("policy.openvla_oft.chunk_len=2", f"policy.checkpoint={tmp_path / 'oft'}"), 7)


def _oft_release(tmp_path, a=4, p=3, out_dim=None):
    """A tiny folder in the layout of OFT's released fine-tunes: OpenVLA's files (no vlarl metadata), DDP-saved
    ``action_head--150000_checkpoint.pt`` (bf16) and ``proprio_projector--150000_checkpoint.pt``, and
    ``dataset_statistics.json`` with action and proprio statistics."""
    from vlarl.policies.openvla.checkpoint import save_pretrained
    from vlarl.policies.openvla.modeling import ProprioProjector
    from vlarl.policies.openvla_oft.heads import L1Head

    torch.manual_seed(0)
    base = build_policy("micro", a, instructions=INSTRUCTIONS)
    path = tmp_path / "oft-release"
    save_pretrained(base, path)
    config = json.loads((path / "config.json").read_text())
    config.pop("vlarl")
    (path / "config.json").write_text(json.dumps(config))
    (path / "vlarl_heads.safetensors").unlink()
    d = base.model.hidden_size
    head, proj = L1Head(d, a), ProprioProjector(p, d)
    if out_dim:  # a head of the wrong action size
        head.model.fc2 = torch.nn.Linear(d, out_dim)
    torch.save(
        {f"module.{k}": v.bfloat16() for k, v in head.state_dict().items()}, path / "action_head--150000_checkpoint.pt"
    )
    torch.save(
        {f"module.{k}": v for k, v in proj.state_dict().items()}, path / "proprio_projector--150000_checkpoint.pt"
    )
    stats = {
        "action": {"q01": [-0.5] * a, "q99": [0.5] * a, "mask": [True] * (a - 1) + [False]},
        "proprio": {"q01": [-2.0] * p, "q99": [2.0] * p},
    }
    (path / "dataset_statistics.json").write_text(json.dumps({"libero_spatial_no_noops": stats}))
    return path, head, proj


def _release_cfg(path, *overrides):
    return _cfg(
        f"policy.checkpoint={path}",
        "policy.unnorm_key=libero_spatial_no_noops",
        "policy.openvla_oft.chunk_len=2",
        "policy.openvla_oft.action_head=l1",
        *overrides,
    )


def test_oft_release_layout_loads_its_head_projector_and_statistics(tmp_path):
    path, head, proj = _oft_release(tmp_path)
    policy = make_policy(_release_cfg(path), 4).eval()
    assert isinstance(policy, OFTPolicy) and policy.model.config.proprio_dim == 3
    for name, value in head.state_dict().items():
        torch.testing.assert_close(policy.l1_head.state_dict()[name], value.bfloat16().float(), atol=0, rtol=0)
    for name, value in proj.state_dict().items():
        torch.testing.assert_close(policy.model.proprio_projector.state_dict()[name], value, atol=0, rtol=0)
    obs = {**observations(2), "proprio": np.array([[4.0, 0.0, -1.0], [1.0, 2.0, -3.0]], np.float32)}
    out = policy.act(obs)
    expected_proprio = np.clip(2 * (obs["proprio"] + 2) / 4 - 1, -1, 1)  # q01 -2, q99 2
    np.testing.assert_allclose(out.inputs["proprio"].numpy(), expected_proprio, atol=1e-6)
    with torch.no_grad():
        pred = policy.l1_head(policy._parallel(policy.model, out.inputs)[1], 2).clamp(-1, 1).numpy()
    by_hand = np.where([True, True, True, False], 0.5 * (pred + 1) * 1.0 - 0.5, pred)  # q01 -0.5, q99 0.5
    assert out.actions.shape == (2, 2, 4)
    np.testing.assert_allclose(out.actions, by_hand, atol=1e-6)
    with pytest.raises(ValueError, match="holds a openvla_oft checkpoint; policy.family=openvla cannot load it"):
        make_policy(_cfg("policy.family=openvla", f"policy.checkpoint={path}", "policy.unnorm_key=vlarl"), 4)


def test_an_l1_release_loads_as_a_discrete_policy_for_rl(tmp_path):
    """RL starts from an L1 fine-tune by loading it with the discrete head (README): the backbone and proprio
    projector are the fine-tune's, the L1 head is left out, and the chunk's tokens are sampled with exact
    log-probs the learner reproduces."""
    path, _, proj = _oft_release(tmp_path)
    l1 = make_policy(_release_cfg(path), 4)
    discrete = make_policy(_release_cfg(path, "policy.openvla_oft.action_head=discrete"), 4).eval()
    assert discrete.l1_head is None and "action_head" not in discrete.heads()
    for name, value in l1.model.state_dict().items():
        assert torch.equal(discrete.model.state_dict()[name], value), name
    for name, value in proj.state_dict().items():
        assert torch.equal(discrete.model.proprio_projector.state_dict()[name], value)
    obs = {**observations(2), "proprio": np.zeros((2, 3), np.float32)}
    out = discrete.act(obs, Sampling(temperature=1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(discrete.evaluate(out.inputs, out.tokens)[0], out.logprob, atol=1e-5, rtol=0)


def test_a_misshapen_or_doubled_oft_file_is_named(tmp_path):
    path, _, _ = _oft_release(tmp_path, out_dim=7)
    with pytest.raises(ValueError, match=r"\(action_head\): .*model.fc2.weight: \[7, 128\], expected \[4, 128\]"):
        make_policy(_release_cfg(path), 4)
    (path / "action_head--2_checkpoint.pt").write_bytes((path / "action_head--150000_checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match="several action_head files"):
        make_policy(_release_cfg(path), 4)


def test_sft_trains_the_l1_head_on_normalised_actions(tmp_path):
    path, _, _ = _oft_release(tmp_path)
    policy = make_policy(_release_cfg(path), 4).train()
    actions = np.random.default_rng(0).uniform(-0.4, 0.4, (2, 2, 4)).astype(np.float32)
    targets = policy.encode_actions(actions)
    assert targets.dtype == torch.float32  # normalised actions, not tokens
    np.testing.assert_allclose(targets[..., :3].numpy(), actions[..., :3] * 2, atol=1e-6)  # [-0.5, 0.5] -> [-1, 1]
    inputs = policy.prepare({**observations(2), "proprio": np.zeros((2, 3), np.float32)})
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    first = policy.sft_loss(inputs, targets)[0].item()
    for _ in range(30):
        loss, _ = policy.sft_loss(inputs, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_lora_trains_the_l1_head_beside_the_adapters(tmp_path):
    from vlarl.policies.openvla.lora import apply_lora

    path, _, _ = _oft_release(tmp_path)
    policy = make_policy(_release_cfg(path), 4)
    apply_lora(policy, 4, 8, ["q_proj", "v_proj"])
    assert all(p.requires_grad for p in policy.l1_head.parameters())
    assert all(p.requires_grad for p in policy.model.proprio_projector.parameters())
    assert not any(p.requires_grad for p in policy.model.vision_backbone.parameters())
