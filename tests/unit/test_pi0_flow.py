"""π0 flow matching: hand-computed Flow-SDE / Flow-Noise log-probs, the vectorised chain against a slow loop,
rollout/learner log-prob agreement through the action expert, the SDE's zero-noise limit, learning, padding."""

import math

import pytest
import torch

from vlarl.policies.pi0 import flow
from vlarl.policies.pi0.expert import ActionExpert, ExpertConfig, NoiseHead, ValueHead, expert_step_fn, time_embedding

LOG_2PI = math.log(2 * math.pi)


def _normal_logpdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * LOG_2PI


def _toy_velocity(x, t):
    return 0.5 * x + t  # a velocity field we can evaluate by hand


def _toy_step(log_std_at=None):
    def step(x, t):
        v = _toy_velocity(x, t[:, None, None])
        if log_std_at is None:
            return v, None
        return v, torch.full_like(x, log_std_at[round(float(t[0]) * 2)])

    return step


CHAIN = torch.tensor([0.3, 0.1, -0.2]).reshape(1, 3, 1, 1)  # x at t = 1, 0.5, 0 (1-D, 2 steps)


def test_flow_sde_log_probs_by_hand():
    # step 0: t=1, delta=0.5, sigma=0.5*sqrt(1/(1-0.5)); v=0.5*0.3+1=1.15; noise estimate x+(1-t)v=0.3
    sigma0 = 0.5 * math.sqrt(2)
    mean0 = 0.3 - 0.5 * (1.15 + sigma0**2 / 2 * 0.3)
    std0 = sigma0 * math.sqrt(0.5)
    assert mean0 == pytest.approx(-0.3125) and std0 == pytest.approx(0.5)
    # step 1: t=0.5, sigma=0.5*sqrt(0.5/0.5)=0.5; v=0.5*0.1+0.5=0.55; noise estimate 0.1+0.5*0.55=0.375
    mean1 = 0.1 - 0.5 * (0.55 + 0.25 / (2 * 0.5) * 0.375)
    std1 = 0.5 * math.sqrt(0.5)
    assert mean1 == pytest.approx(-0.221875)
    want = [_normal_logpdf(0.1, mean0, std0), _normal_logpdf(-0.2, mean1, std1)]

    velocities = torch.tensor([1.15, 0.55]).reshape(1, 2, 1, 1)
    got = flow.chain_log_probs(CHAIN, velocities, "flow_sde", noise_level=0.5)
    assert got.flatten().tolist() == pytest.approx(want, abs=1e-6)
    again = flow.recompute_log_probs(_toy_step(), CHAIN, "flow_sde", noise_level=0.5)
    assert again.flatten().tolist() == pytest.approx(want, abs=1e-6)
    assert flow.reduce_log_prob(got, joint=True).item() == pytest.approx(sum(want), abs=1e-6)
    one = flow.reduce_log_prob(got, joint=False, denoise_step=torch.tensor([1]))
    assert one.item() == pytest.approx(want[1], abs=1e-6)


def test_flow_noise_log_probs_by_hand():
    # Euler means: 0.3 - 0.5*1.15 = -0.275 (std 0.1 at t=1), 0.1 - 0.5*0.55 = -0.175 (std 0.2 at t=0.5)
    want = [_normal_logpdf(0.1, -0.275, 0.1), _normal_logpdf(-0.2, -0.175, 0.2)]
    step = _toy_step({2: math.log(0.1), 1: math.log(0.2)})
    got = flow.recompute_log_probs(step, CHAIN, "flow_noise")
    assert got.flatten().tolist() == pytest.approx(want, abs=1e-5)


def test_gaussian_entropy_by_hand():
    assert flow.gaussian_entropy(torch.tensor([0.1])).item() == pytest.approx(
        0.5 * math.log(2 * math.pi * math.e * 0.01)
    )


def test_sde_sigma_and_time_grid_by_hand():
    assert flow.time_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    want = [0.5 * 2, 0.5 * math.sqrt(3), 0.5, 0.5 * math.sqrt(1 / 3)]
    assert flow.sde_sigma(4, 0.5).tolist() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
def test_vectorised_chain_log_probs_equal_a_slow_loop(method):
    g = torch.Generator().manual_seed(1)
    b, n, k, a = 2, 3, 2, 2
    chain = torch.randn(b, n + 1, k, a, generator=g)
    vel = torch.randn(b, n, k, a, generator=g)
    log_std = 0.3 * torch.randn(b, n, k, a, generator=g) - 1
    stochastic = torch.tensor([[True, True, True], [False, True, False]])
    got = flow.chain_log_probs(chain, vel, method, noise_level=0.7, log_std=log_std, stochastic=stochastic)
    for bi in range(b):
        for i in range(n):
            t, dt = 1 - i / n, 1 / n
            s = 0.7 * math.sqrt(t / (1 - (t if t < 1 else 1 - 1 / n)))
            for ki in range(k):
                for ai in range(a):
                    x, v, y = chain[bi, i, ki, ai].item(), vel[bi, i, ki, ai].item(), chain[bi, i + 1, ki, ai].item()
                    if method == "flow_sde":
                        mean, std = x - dt * (v + s * s / (2 * t) * (x + (1 - t) * v)), s * math.sqrt(dt)
                    else:
                        mean, std = x - dt * v, math.exp(log_std[bi, i, ki, ai].item())
                    want = _normal_logpdf(y, mean, std) if stochastic[bi, i] else 0.0
                    assert got[bi, i, ki, ai].item() == pytest.approx(want, abs=1e-5)


def _expert(state_dim=2, seed=0):
    torch.manual_seed(seed)
    return ActionExpert(ExpertConfig(action_dim=3, chunk_len=4, prefix_dim=8, state_dim=state_dim, width=32))


def _prefix(seed=0):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randn(3, 6, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])  # none, left, right padding
    return prefix, mask, torch.randn(3, 2, generator=g)


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
@pytest.mark.parametrize("joint", [True, False])
def test_recomputed_log_probs_equal_the_samplers_through_the_expert(method, joint):
    expert = _expert()
    head = NoiseHead(32, 3) if method == "flow_noise" else None
    prefix, mask, state = _prefix()
    denoise_step = None if joint else torch.tensor([0, 3, 2])
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(3, 4, 3, generator=g)
    with torch.no_grad():
        cache = expert.encode_prefix(prefix, mask)
    rollout = flow.sample(expert_step_fn(expert, cache, state, head), noise, 4, method, 0.5, denoise_step, g)
    assert torch.equal(rollout.chain[:, 0], noise) and torch.equal(rollout.actions, rollout.chain[:, -1])
    assert (rollout.log_probs[rollout.stochastic] != 0).all() and (rollout.log_probs[~rollout.stochastic] == 0).all()

    cache = expert.encode_prefix(prefix, mask)  # the learner's pass, with gradients
    step = expert_step_fn(expert, cache, state, head)
    learner = flow.recompute_log_probs(step, rollout.chain, method, 0.5, rollout.stochastic)
    assert (learner - rollout.log_probs).abs().max().item() <= 1e-5
    total = flow.reduce_log_prob(learner, joint, denoise_step)
    assert total.shape == (3, 4, 3)
    total.sum().backward()
    assert expert.action_in_proj.weight.grad.abs().sum() > 0 and expert.prefix_proj.weight.grad.abs().sum() > 0
    if head is not None:
        assert head.mlp[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
def test_one_step_rows_take_one_expert_call_and_equal_every_step_rescored(method):
    """``joint_logprob=false``: each row at its own step in one call, against a loop over every step (values, grads)."""
    head = NoiseHead(32, 3) if method == "flow_noise" else None
    prefix, mask, state = _prefix()
    chain = torch.randn(3, 5, 4, 3, generator=torch.Generator().manual_seed(4))
    stochastic = flow.stochastic_steps(3, 4, torch.tensor([2, 0, 3]))
    results = []
    for fast in (True, False):
        expert = _expert()
        if head is not None:
            torch.manual_seed(1)
            head = NoiseHead(32, 3)
        step = expert_step_fn(expert, expert.encode_prefix(prefix, mask), state, head)
        calls = []

        def counted(x, t, step=step, calls=calls):
            calls.append(t)
            return step(x, t)

        if fast:
            logp = flow.recompute_log_probs(counted, chain, method, 0.5, stochastic)
            assert len(calls) == 1 and calls[0].tolist() == pytest.approx([0.5, 1.0, 0.25])  # t = 1 - step / 4
        else:  # the slow reference: every step for every row, masked afterwards
            grid = flow.time_grid(4)
            outs = [counted(chain[:, i], grid[i].expand(3)) for i in range(4)]
            log_std = torch.stack([o[1] for o in outs], 1) if head is not None else None
            velocities = torch.stack([o[0] for o in outs], 1)
            logp = flow.chain_log_probs(chain, velocities, method, 0.5, log_std, stochastic)
        logp.sum().backward()
        results.append((logp.detach(), expert.action_in_proj.weight.grad.clone()))
    (fast_logp, fast_grad), (slow_logp, slow_grad) = results
    assert (fast_logp[stochastic] != 0).all() and (fast_logp[~stochastic] == 0).all()
    torch.testing.assert_close(fast_logp, slow_logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_grad, slow_grad, atol=1e-5, rtol=1e-4)


def test_flow_sde_converges_to_the_ode_as_noise_vanishes():
    expert = _expert()
    prefix, mask, state = _prefix()
    noise = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        step = expert_step_fn(expert, expert.encode_prefix(prefix, mask), state)
        ode = flow.sample(step, noise, 4, "flow_ode")
        levels, gaps = (0.3, 0.03, 0.003, 0.0003), []
        for level in levels:
            sde = flow.sample(step, noise, 4, "flow_sde", level, generator=torch.Generator().manual_seed(4))
            gaps.append((sde.actions - ode.actions).abs().max().item())
    assert (ode.log_probs == 0).all() and not ode.stochastic.any()
    # the injected noise is linear in the level: the gap shrinks ~10x per decade, within 5 x level
    assert all(gap < 5 * level for gap, level in zip(gaps, levels)), gaps
    assert all(a > 5 * b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[0] > 0.03, gaps


def test_flow_matching_convention_and_oracle_velocity():
    g = torch.Generator().manual_seed(5)
    actions, noise = torch.randn(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)
    time = torch.tensor([0.1, 0.5, 0.9, 0.999])
    x_t = flow.interpolate(actions, noise, time)
    assert torch.allclose(x_t[2], 0.9 * noise[2] + 0.1 * actions[2])
    oracle = flow.flow_matching_loss(lambda x, t: (x - actions) / t[:, None, None], actions, noise, time)
    assert oracle.item() < 1e-10
    assert flow.flow_matching_loss(lambda x, t: torch.zeros_like(x), actions, noise, time) > 0.5
    t = flow.sample_time(20000)
    assert t.min() >= 0.001 and t.max() <= 1.0 and abs(t.mean().item() - (0.999 * 0.6 + 0.001)) < 0.01


def test_adam_on_the_flow_matching_loss_lowers_it():
    expert = _expert()
    prefix, mask, state = _prefix()
    g = torch.Generator().manual_seed(6)
    actions = torch.rand(3, 4, 3, generator=g) * 2 - 1
    noise, time = torch.randn(3, 4, 3, generator=g), torch.tensor([0.2, 0.5, 0.8])
    opt = torch.optim.Adam(expert.parameters(), lr=3e-3)

    def loss():
        cache = expert.encode_prefix(prefix, mask)
        return flow.flow_matching_loss(lambda x, t: expert(cache, x, t, state)[0], actions, noise, time)

    first = loss().item()
    for _ in range(150):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert loss().item() < 0.2 * first, (first, value.item())


@pytest.mark.parametrize("source", ["prefix_mean", "prefix_last", "expert"])
def test_prefix_padding_changes_nothing_for_real_rows(source):
    expert = _expert()
    value_head = ValueHead(32, source)
    prefix, mask, state = _prefix()
    garbage = torch.where(mask.bool()[..., None], prefix, torch.randn_like(prefix) * 100)
    x_t, t = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(7)), torch.tensor([1.0, 0.5, 0.25])
    with torch.no_grad():
        cache = expert.encode_prefix(garbage, mask)
        velocity, features = expert(cache, x_t, t, state)
        value = value_head(cache, features)
        for row in range(3):
            real = mask[row].bool()
            alone = expert.encode_prefix(prefix[row : row + 1, real], mask[row : row + 1, real])
            v1, f1 = expert(alone, x_t[row : row + 1], t[row : row + 1], state[row : row + 1])
            assert (v1[0] - velocity[row]).abs().max().item() <= 1e-5
            assert abs(value_head(alone, f1).item() - value[row].item()) <= 1e-5


def test_action_tokens_attend_to_each_other_and_the_state():
    expert = _expert()
    prefix, mask, state = _prefix()
    x_t, t = torch.randn(3, 4, 3), torch.full((3,), 0.5)
    with torch.no_grad():
        cache = expert.encode_prefix(prefix, mask)
        base, _ = expert(cache, x_t, t, state)
        moved = x_t.clone()
        moved[:, 3] += 1.0
        other, _ = expert(cache, moved, t, state)
        restated, _ = expert(cache, x_t, t, state + 1.0)
    assert (other[:, 0] - base[:, 0]).abs().max() > 1e-4
    assert (restated - base).abs().max() > 1e-4


def test_value_head_detach_stops_the_critics_gradient_at_its_input():
    expert = _expert()
    prefix, mask, _ = _prefix()
    for detach, reaches in ((False, True), (True, False)):
        expert.zero_grad()
        head = ValueHead(32, "prefix_mean", detach=detach)
        head(expert.encode_prefix(prefix, mask)).sum().backward()
        grad = expert.prefix_proj.weight.grad
        assert (grad is not None and grad.abs().sum().item() > 0) == reaches


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="noise_method"):
        flow.sample(_toy_step(), torch.zeros(1, 1, 1), 2, "ddpm")
    with pytest.raises(ValueError, match="needs noise"):
        flow.sample(_toy_step(), torch.zeros(1, 1, 1), 2, "flow_sde", noise_level=0.0)
    with pytest.raises(ValueError, match="log_std"):
        flow.sample(_toy_step(), torch.zeros(1, 1, 1), 2, "flow_noise")
    with pytest.raises(ValueError, match="no log-prob"):
        flow.chain_log_probs(CHAIN, torch.zeros(1, 2, 1, 1), "flow_ode")
    with pytest.raises(ValueError, match="denoise_step"):
        flow.reduce_log_prob(torch.zeros(1, 2, 1, 1), joint=False)
    with pytest.raises(ValueError, match="state"):
        expert = _expert()
        prefix, mask, _ = _prefix()
        expert(expert.encode_prefix(prefix, mask), torch.zeros(3, 4, 3), torch.ones(3))


def test_suffix_attention_pattern_by_hand():
    expert = ActionExpert(ExpertConfig(action_dim=1, chunk_len=2, prefix_dim=4, state_dim=1, width=8, head_dim=4))
    allowed = expert.suffix_attention(torch.tensor([[False, True]]))[0]
    # keys: pad, prefix token, state, action 0, action 1; queries: state, action 0, action 1
    assert allowed.tolist() == [
        [False, True, True, False, False],
        [False, True, True, True, True],
        [False, True, True, True, True],
    ]


def test_noise_head_std_stays_in_its_range():
    head = NoiseHead(8, 3, min_std=0.08, max_std=0.16)
    log_std = head(torch.randn(5, 4, 8) * 100)
    assert log_std.shape == (5, 4, 3)
    assert log_std.min() >= math.log(0.08) - 1e-6 and log_std.max() <= math.log(0.16) + 1e-6
    assert log_std.max() - log_std.min() > 0.1


def test_time_embedding_by_hand():
    # dim 4: periods 4e-3 and 4.0; at t=1 the angles are 2 pi / 4e-3 = 500 pi and 2 pi / 4 = pi / 2
    emb = time_embedding(torch.tensor([0.0, 1.0]), 4, 4e-3, 4.0)
    assert emb[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert emb[1].tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0], abs=1e-6)
