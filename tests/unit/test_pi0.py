"""The pi0 family: rollout/learner log-probs of the recorded chain, ODE evaluation, SFT, checkpoints, bad input."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.unit.chunk_obs import INSTRUCTIONS, observations
from vlarl.config import load_config
from vlarl.policies import make_policy
from vlarl.policies.base import GREEDY, Sampling
from vlarl.policies.openvla.factory import build_policy
from vlarl.policies.pi0 import Pi0Policy, flow


def _pi0(k=3, seed=0, **kw):
    torch.manual_seed(seed)
    return build_policy("micro", 4, instructions=INSTRUCTIONS, cls=Pi0Policy, chunk_len=k, proprio_dim=4, **kw).eval()


def _cfg(*overrides):
    return load_config("sft", overrides=["policy.family=pi0", "policy.arch=micro", *overrides]).policy


@pytest.mark.parametrize(
    "options",
    [
        {"noise_method": "flow_sde"},
        {"noise_method": "flow_noise"},
        {"noise_method": "flow_sde", "value_source": "expert"},
    ],
)
def test_rollout_logprobs_equal_the_learners_from_the_chain_with_mixed_prompt_lengths(options):
    policy = _pi0(**options)
    obs = observations()
    assert len(set(policy.prepare(obs)["attention_mask"].sum(1).tolist())) > 1  # prompts of different lengths
    out = policy.act(obs, Sampling(), torch.Generator().manual_seed(1))
    assert out.actions.shape == (3, 3, 4) and out.logprob.shape == out.tokens.shape == (3, 3, 4)
    assert out.chain.shape == (3, 5, 3, 4) and out.value.shape == (3, 3)  # 4 denoising steps; V per env step
    logp, entropy, value = policy.evaluate(out.inputs, out.tokens, 1.0, out.chain)
    torch.testing.assert_close(logp, out.logprob, atol=1e-5, rtol=0)
    torch.testing.assert_close(value, out.value, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, -logp)
    # the chain ends at the chunk the env got (clamped to [-1, 1], then un-normalised)
    final = policy.norm_stats.unnormalize(out.chain[:, -1].clamp(-1, 1).numpy())
    np.testing.assert_allclose(out.actions, final, atol=1e-6)
    # each row alone (no padding) scores as in the padded batch
    for b in range(3):
        alone = policy.prepare({k: v[b : b + 1] for k, v in obs.items()})
        row_logp = policy.evaluate(alone, out.tokens[b : b + 1], 1.0, out.chain[b : b + 1])[0]
        torch.testing.assert_close(row_logp, logp[b : b + 1], atol=1e-5, rtol=0)
    # another chain scores differently: the check has teeth
    other = policy.act(obs, Sampling(), torch.Generator().manual_seed(2)).chain
    assert not torch.allclose(policy.evaluate(out.inputs, out.tokens, 1.0, other)[0], logp, atol=1e-3)


def test_greedy_is_the_deterministic_ode():
    """GREEDY integrates the ODE from the drawn noise (no log-prob); Flow-SDE at a tiny noise level lands within
    2e-3 of it from the same start."""
    policy = _pi0()
    first = policy.act(observations(), GREEDY, torch.Generator().manual_seed(0))
    second = policy.act(observations(), GREEDY, torch.Generator().manual_seed(0))
    assert (first.logprob == 0).all() and np.array_equal(first.actions, second.actions)
    start = torch.randn(3, 3, 4, generator=torch.Generator().manual_seed(0))
    inputs = policy.prepare(observations())
    step = policy._step(policy._prefix(inputs), inputs)
    ode = flow.sample(step, start, 4, "flow_ode")
    sde = flow.sample(step, start, 4, "flow_sde", 1e-4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sde.actions, ode.actions, atol=2e-3, rtol=0)


def test_sft_lowers_the_flow_matching_loss_on_a_fixed_batch():
    policy = _pi0().train()
    inputs = policy.prepare(observations())
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 3, 4)).astype(np.float32)
    targets = policy.encode_actions(actions)
    assert targets.dtype == torch.float32 and targets.shape == (3, 3, 4)

    def loss_at_fixed_draws():
        torch.manual_seed(123)  # the same noise and times each time
        return policy.sft_loss(inputs, targets)[0].item()

    first = loss_at_fixed_draws()
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    for _ in range(40):
        torch.manual_seed(123)
        loss, metrics = policy.sft_loss(inputs, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(metrics) == {"loss", "token_accuracy"}
    assert loss_at_fixed_draws() < 0.5 * first


def test_checkpoint_round_trip_gives_identical_actions(tmp_path):
    policy = make_policy(_cfg("policy.pi0.chunk_len=2", "policy.use_proprio=true"), 4, 4, None, INSTRUCTIONS).eval()
    policy.save(tmp_path / "pi0")
    loaded = make_policy(_cfg("policy.pi0.chunk_len=2", f"policy.checkpoint={tmp_path / 'pi0'}"), 4).eval()
    obs = observations()
    a = policy.act(obs, Sampling(), torch.Generator().manual_seed(3))
    b = loaded.act(obs, Sampling(), torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(a.actions, b.actions)
    assert torch.equal(a.logprob, b.logprob) and torch.equal(a.value, b.value)


def test_a_checkpoint_of_another_family_chunk_length_or_tensor_is_refused(tmp_path):
    build_policy("micro", 4, instructions=INSTRUCTIONS).save(tmp_path / "openvla")
    with pytest.raises(ValueError, match="holds a openvla checkpoint; policy.family=pi0 cannot load it"):
        make_policy(_cfg(f"policy.checkpoint={tmp_path / 'openvla'}"), 4)
    make_policy(_cfg("policy.pi0.chunk_len=2"), 4, 0, None, INSTRUCTIONS).save(tmp_path / "pi0")
    with pytest.raises(ValueError, match=r"decodes chunks of 2; policy.pi0.chunk_len=4"):
        make_policy(_cfg("policy.pi0.chunk_len=4", f"policy.checkpoint={tmp_path / 'pi0'}"), 4)
    heads = load_file(tmp_path / "pi0" / "vlarl_heads.safetensors")
    name = next(k for k in heads if k.startswith("expert.action_out_proj.weight"))
    save_file({k: v for k, v in heads.items() if k != name}, tmp_path / "pi0" / "vlarl_heads.safetensors")
    with pytest.raises(ValueError, match=r"\(expert\): missing tensors \['action_out_proj.weight'\]"):
        make_policy(_cfg("policy.pi0.chunk_len=2", f"policy.checkpoint={tmp_path / 'pi0'}"), 4)


def test_bad_chains_and_options_are_refused():
    policy = _pi0()
    out = policy.act(observations())
    with pytest.raises(ValueError, match=r"denoising chain \[B, N\+1, K, A\] = \[3, 5, 3, 4\], got \[3, 4, 3, 4\]"):
        policy.evaluate(out.inputs, out.tokens, 1.0, out.chain[:, 1:])
    with pytest.raises(ValueError, match="got None"):
        policy.evaluate(out.inputs, out.tokens)
    with pytest.raises(ValueError, match="noise_method='flow_ode'"):
        _pi0(noise_method="flow_ode")
    with pytest.raises(ValueError, match="critic=separate is openvla's"):
        _pi0(critic="separate")


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
def test_one_step_logprobs_score_the_drawn_step_alone_and_the_learner_agrees(method):
    """joint_logprob=False (RLinf's default): one uniformly drawn denoising step per row is stochastic, the others
    follow the ODE; the log-prob is that step's Gaussian density, which the learner recomputes from the chain."""
    policy = _pi0(noise_method=method, joint_logprob=False)
    obs = observations()
    out = policy.act(obs, Sampling(), torch.Generator().manual_seed(4))
    assert out.denoise_step.shape == (3,) and ((out.denoise_step >= 0) & (out.denoise_step < 4)).all()
    logp = policy.evaluate(out.inputs, out.tokens, 1.0, out.chain, out.denoise_step)[0]
    torch.testing.assert_close(logp, out.logprob, atol=1e-5, rtol=0)
    inputs = policy.prepare(obs)
    step = policy._step(policy._prefix(inputs), inputs)
    grid = flow.time_grid(4, "cpu")
    chain, sigma = out.chain, flow.sde_sigma(4, 0.5, "cpu")
    with torch.no_grad():
        for j in range(4):
            v, log_std = step(chain[:, j], grid[j].expand(3))
            mean, std = flow.transition(chain[:, j], v, grid[j], 0.25, method, sigma[j], log_std)
            by_hand = -0.5 * ((chain[:, j + 1] - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
            for b, i in enumerate(out.denoise_step.tolist()):
                if j == i:  # the drawn step: its Gaussian density is the decision's log-prob
                    torch.testing.assert_close(out.logprob[b], by_hand[b], atol=1e-5, rtol=0)
                else:  # every other step is the ODE's Euler step
                    torch.testing.assert_close(chain[b, j + 1], chain[b, j] - v[b] / 4, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="mixes one-step and every-step chains"):
        policy.evaluate(out.inputs, out.tokens, 1.0, out.chain, torch.tensor([0, -1, 1]))
