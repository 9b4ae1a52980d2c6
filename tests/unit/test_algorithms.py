"""Unit tests for vlarl.algorithms: hand-computed cases and slow pure-Python reference loops."""

import math

import numpy as np
import pytest
import torch

from vlarl.algorithms import (
    ADVANTAGES,
    POLICY_LOSSES,
    aggregate,
    entropy_bonus,
    gae,
    get_advantage,
    get_policy_loss,
    grpo,
    kl_penalty,
    masked_mean,
    normalize,
    ppo_policy_loss,
    register_advantage,
    reinforce_pp,
    rloo,
    value_loss,
)
from vlarl.algorithms.estimate import advantages, episode_scores, rl_steps
from vlarl.config.schema import AlgoConfig
from vlarl.rollout.collector import next_values
from vlarl.rollout.schema import Batch

F64 = torch.float64


def col(xs, dtype=F64):
    """A [T, 1] time-major tensor from a python list."""
    return torch.tensor(xs, dtype=dtype).unsqueeze(1)


def tok(xs, requires_grad=False):
    """A [1, L] per-token tensor from a python list."""
    return torch.tensor([xs], dtype=F64, requires_grad=requires_grad)


# ----------------------------------------------------------------------------------------------- GAE


def test_gae_hand_three_steps():
    # gamma=0.9, lam=0.8 -> gamma*lam = 0.72
    # delta0 = 1 + 0.9*1.0 - 0.5 = 1.4 ; delta1 = 0 + 0.9*1.5 - 1.0 = 0.35 ; delta2 = 2 + 0.9*2.0 - 1.5 = 2.3
    # A2 = 2.3 ; A1 = 0.35 + 0.72*2.3 = 2.006 ; A0 = 1.4 + 0.72*2.006 = 2.84432
    r, v, nv = col([1.0, 0.0, 2.0]), col([0.5, 1.0, 1.5]), col([1.0, 1.5, 2.0])
    no = torch.zeros(3, 1, dtype=torch.bool)
    adv, ret = gae(r, v, nv, no, no, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, col([2.84432, 2.006, 2.3]))
    torch.testing.assert_close(ret, col([3.34432, 3.006, 3.8]))


def test_gae_termination_ignores_next_value_and_stops_accumulation():
    # Episode terminates at t=1: next_values[1]=99 is ignored. delta1 = 0 + 0 - 1.0 = -1.0 and A1 = delta1.
    # A2 = 2.3 does not leak into A1. A0 = 1.4 + 0.72*(-1.0) = 0.68
    r, v, nv = col([1.0, 0.0, 2.0]), col([0.5, 1.0, 1.5]), col([1.0, 99.0, 2.0])
    term = col([False, True, False], torch.bool)
    trunc = torch.zeros(3, 1, dtype=torch.bool)
    adv, ret = gae(r, v, nv, term, trunc, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, col([0.68, -1.0, 2.3]))
    torch.testing.assert_close(ret, adv + v)


def test_gae_truncation_bootstraps_from_supplied_final_value():
    # Episode truncated at t=1 with V(final obs)=3.0: delta1 = 0 + 0.9*3.0 - 1.0 = 1.7, and A1 = delta1
    # (the next episode's A2 = 2.3 does not leak in). A0 = 1.4 + 0.72*1.7 = 2.624
    r, v, nv = col([1.0, 0.0, 2.0]), col([0.5, 1.0, 1.5]), col([1.0, 3.0, 2.0])
    term = torch.zeros(3, 1, dtype=torch.bool)
    trunc = col([False, True, False], torch.bool)
    adv, _ = gae(r, v, nv, term, trunc, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, col([2.624, 1.7, 2.3]))
    # The same step marked terminated instead gives a different (non-bootstrapped) answer.
    adv_term, _ = gae(r, v, nv, trunc, term, gamma=0.9, lam=0.8)
    assert not torch.allclose(adv, adv_term)


def _gae_reference(r, v, nv, term, trunc, gamma, lam):
    T, B = len(r), len(r[0])
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        acc = 0.0
        for t in reversed(range(T)):
            boot = 0.0 if term[t][b] else nv[t][b]
            delta = r[t][b] + gamma * boot - v[t][b]
            acc = delta + (0.0 if (term[t][b] or trunc[t][b]) else gamma * lam * acc)
            adv[t][b] = acc
    return adv


def test_gae_matches_reference_loop_with_random_episode_ends():
    g = torch.Generator().manual_seed(0)
    T, B, gamma, lam = 7, 3, 0.97, 0.9
    r, v, nv = (torch.randn(T, B, generator=g, dtype=F64) for _ in range(3))
    ends = torch.rand(T, B, generator=g)
    term, trunc = ends < 0.2, (ends >= 0.2) & (ends < 0.4)
    assert term.any() and trunc.any()
    adv, ret = gae(r, v, nv, term, trunc, gamma=gamma, lam=lam)
    ref = _gae_reference(r.tolist(), v.tolist(), nv.tolist(), term.tolist(), trunc.tolist(), gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(ref, dtype=F64))
    torch.testing.assert_close(ret, adv + v)


def test_gae_rejects_mismatched_shapes():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="next_values"):
        gae(x, x, torch.zeros(3, 1), x.bool(), x.bool(), 0.9, 0.9)


# ------------------------------------------------------------------------------------- GRPO / RLOO


def test_grpo_hand_case():
    # scores [1, 0, 1, 0]: mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.57735 -> +-0.5/0.57735 = +-0.86603
    adv = grpo(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.zeros(4, dtype=torch.long), eps=0.0)
    s = 0.5 / math.sqrt(1 / 3)
    torch.testing.assert_close(adv, torch.tensor([s, -s, s, -s]))
    # Dr.GRPO: no std division.
    adv = grpo(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.zeros(4, dtype=torch.long), normalize_std=False)
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, 0.5, -0.5]))


def test_grpo_identical_scores_and_singletons_get_exact_zero():
    # Seven float32 0.1s: sum/7 != 0.1 after rounding, so a naive (s - mean) / (std + eps) is not exactly 0 here.
    scores = torch.tensor([0.1] * 7 + [0.7, 3.0])
    ids = torch.tensor([5] * 7 + [9, 2])
    for normalize_std in (True, False):
        adv = grpo(scores, ids, normalize_std=normalize_std)
        assert torch.equal(adv, torch.zeros(9))


def test_grpo_interleaved_groups_match_reference_loop():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(20, generator=g, dtype=F64)
    ids = torch.randint(0, 4, (20,), generator=g) * 7 + 3  # non-contiguous ids, interleaved
    for normalize_std in (True, False):
        adv = grpo(scores, ids, eps=1e-6, normalize_std=normalize_std)
        ref = []
        for i in range(20):
            members = [scores[j].item() for j in range(20) if ids[j] == ids[i]]
            mean = sum(members) / len(members)
            a = scores[i].item() - mean
            if normalize_std and len(members) > 1:
                std = math.sqrt(sum((m - mean) ** 2 for m in members) / (len(members) - 1))
                a /= std + 1e-6
            ref.append(0.0 if len(members) == 1 else a)
        torch.testing.assert_close(adv, torch.tensor(ref, dtype=F64))


def test_rloo_hand_case():
    # group 0: [1, 2, 6] -> 1 - (2+6)/2 = -3 ; 2 - (1+6)/2 = -1.5 ; 6 - (1+2)/2 = 4.5 ; group 1: [4] -> 0
    adv = rloo(torch.tensor([1.0, 4.0, 2.0, 6.0]), torch.tensor([0, 1, 0, 0]))
    torch.testing.assert_close(adv, torch.tensor([-3.0, 0.0, -1.5, 4.5]))


# ------------------------------------------------------------------------------ REINFORCE++ / normalize


def test_reinforce_pp_matches_reference_loop():
    g = torch.Generator().manual_seed(2)
    T, B, gamma = 6, 3, 0.9
    r = torch.randn(T, B, generator=g, dtype=F64)
    ends = torch.rand(T, B, generator=g)
    term, trunc = ends < 0.25, (ends >= 0.25) & (ends < 0.45)
    ret = [[0.0] * B for _ in range(T)]
    for b in range(B):
        acc = 0.0
        for t in reversed(range(T)):
            acc = r[t, b].item() + (0.0 if (term[t, b] or trunc[t, b]) else gamma * acc)
            ret[t][b] = acc
    flat = [x for row in ret for x in row]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / len(flat))
    ref = torch.tensor([[(x - mean) / std for x in row] for row in ret], dtype=F64)
    torch.testing.assert_close(reinforce_pp(r, term, trunc, gamma=gamma), ref)
    # a mask leaves steps out of the whitening: the valid steps are whitened among themselves
    mask = torch.ones(T, B, dtype=torch.bool)
    mask[4:, 0] = False
    valid = [ret[t][b] for t in range(T) for b in range(B) if mask[t, b]]
    m = sum(valid) / len(valid)
    s = math.sqrt(sum((x - m) ** 2 for x in valid) / len(valid))
    masked = reinforce_pp(r, term, trunc, gamma=gamma, mask=mask)
    assert masked[5, 0] == 0 and masked[0, 1].item() == pytest.approx((ret[0][1] - m) / s)


def test_normalize_masked_and_all_masked():
    x = torch.tensor([1.0, 3.0, 100.0, float("nan")])
    mask = torch.tensor([True, True, False, False])
    # valid: [1, 3] -> mean 2, population std 1 -> [-1, 1]; masked-out entries -> 0
    torch.testing.assert_close(normalize(x, mask, eps=0.0), torch.tensor([-1.0, 1.0, 0.0, 0.0]))
    out = normalize(x, torch.zeros(4, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(4))


# ------------------------------------------------------------------------------------------ PPO loss


def _ppo(ratios, advs, **kw):
    old = tok([0.0] * len(ratios))
    logp = tok([math.log(x) for x in ratios], requires_grad=True)
    loss, metrics = ppo_policy_loss(logp, old, tok(advs), torch.ones(1, len(ratios), dtype=torch.bool), **kw)
    loss.backward()
    return loss.item(), metrics, logp.grad[0].tolist()


def test_ppo_unclipped():
    # ratio 1.1 inside [0.8, 1.2], A=2: loss = -2*1.1 = -2.2, d/dlogp = -A*ratio = -2.2
    loss, m, grad = _ppo([1.1], [2.0])
    assert loss == pytest.approx(-2.2)
    assert grad == pytest.approx([-2.2])
    assert m["clip_frac"] == 0.0 and m["dual_clip_frac"] == 0.0
    assert m["approx_kl"] == pytest.approx(0.1 - math.log(1.1))


def test_ppo_clipped_above_has_zero_gradient():
    # A=1, ratio 1.5 > 1.2: pg1 = -1.5, pg2 = -1.2 -> max = -1.2; clipped branch is constant in logp
    loss, m, grad = _ppo([1.5], [1.0])
    assert loss == pytest.approx(-1.2)
    assert grad == [0.0]
    assert m["clip_frac"] == 1.0
    assert m["approx_kl"] == pytest.approx(0.5 - math.log(1.5))


def test_ppo_clipped_below_has_zero_gradient():
    # A=-1, ratio 0.5 < 0.8: pg1 = 0.5, pg2 = 0.8 -> max = 0.8
    loss, m, grad = _ppo([0.5], [-1.0])
    assert loss == pytest.approx(0.8)
    assert grad == [0.0]
    assert m["clip_frac"] == 1.0


def test_ppo_asymmetric_clip():
    # A=1, ratio 1.25: clip_high=0.2 clips to -1.2; clip_high=0.28 (clip-higher) leaves -1.25 unclipped
    assert _ppo([1.25], [1.0])[0] == pytest.approx(-1.2)
    loss, m, grad = _ppo([1.25], [1.0], clip_high=0.28)
    assert loss == pytest.approx(-1.25) and m["clip_frac"] == 0.0 and grad == pytest.approx([-1.25])
    # A=-1, ratio 0.75: clip_low=0.2 gives 0.8 (clipped), clip_low=0.3 gives 0.75 (unclipped)
    assert _ppo([0.75], [-1.0])[0] == pytest.approx(0.8)
    assert _ppo([0.75], [-1.0], clip_low=0.3)[0] == pytest.approx(0.75)


def test_ppo_dual_clip_caps_negative_advantage():
    # A=-1, ratio 10: pg1 = 10, pg2 = 1.2 -> 10 without dual clip; with clip_c=3 capped at -A*3 = 3
    loss, m, grad = _ppo([10.0], [-1.0])
    assert loss == pytest.approx(10.0) and m["dual_clip_frac"] == 0.0 and grad == pytest.approx([10.0])
    loss, m, grad = _ppo([10.0], [-1.0], clip_c=3.0)
    assert loss == pytest.approx(3.0)
    assert m["dual_clip_frac"] == 1.0 and m["clip_frac"] == 0.0
    assert grad == [0.0]
    # Positive advantages are never dual-clipped: A=1, ratio 10 -> -1.2
    assert _ppo([10.0], [1.0], clip_c=3.0)[0] == pytest.approx(-1.2)
    with pytest.raises(ValueError):
        _ppo([1.0], [1.0], clip_c=1.0)


def test_ppo_metrics_over_mixed_tokens_ignore_masked():
    # tokens: (ratio 1.1, A 1) unclipped, (1.5, 1) clipped, (0.9, -1) unclipped, masked (50, 1) ignored
    old = torch.zeros(1, 4, dtype=F64)
    logp = tok([math.log(x) for x in (1.1, 1.5, 0.9, 50.0)], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0]], dtype=F64)
    loss, m = ppo_policy_loss(logp, old, tok([1.0, 1.0, -1.0, 1.0]), mask)
    # per-token: -1.1, -1.2, 0.9 -> mean -1.4/3
    assert loss.item() == pytest.approx(-1.4 / 3)
    assert m["clip_frac"] == pytest.approx(1 / 3)
    kl = [(x - 1) - math.log(x) for x in (1.1, 1.5, 0.9)]
    assert m["approx_kl"] == pytest.approx(sum(kl) / 3)
    assert (m["ratio_max"], m["ratio_min"]) == pytest.approx((1.5, 0.9))
    assert m["ratio_mean"] == pytest.approx(3.5 / 3)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-1.1 / 3, 0.0, 0.9 / 3, 0.0])


def test_policy_loss_registry():
    assert get_policy_loss("ppo") is ppo_policy_loss and "ppo" in POLICY_LOSSES
    with pytest.raises(ValueError, match="ppo"):
        get_policy_loss("nope")


# --------------------------------------------------------------------------------------- aggregation


LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=F64)
RAGGED = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token-mean", (1 + 2 + 4) / 3),  # 3 valid tokens
        ("seq-mean-token-sum", (3 + 4) / 2),  # seq sums 3, 4; the empty third sequence is skipped
        ("seq-mean-token-mean", (1.5 + 4) / 2),  # seq means 1.5, 4
    ],
)
def test_aggregate_modes_on_ragged_mask(mode, expected):
    assert aggregate(LOSS, RAGGED, mode).item() == pytest.approx(expected)
    assert aggregate(LOSS, RAGGED.double(), mode).item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_aggregate_all_masked_is_finite_zero_and_backprops(mode):
    x = torch.full((2, 3), float("nan"), dtype=F64, requires_grad=True)
    out = aggregate(x * 1.0, torch.zeros(2, 3, dtype=torch.bool), mode)
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(x.grad, torch.zeros(2, 3, dtype=F64))


def test_aggregate_unknown_mode():
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(LOSS, RAGGED, "sum")


def test_masked_mean_dim_and_entropy_bonus():
    torch.testing.assert_close(masked_mean(LOSS, RAGGED, dim=-1), torch.tensor([1.5, 4.0, 0.0], dtype=F64))
    assert entropy_bonus(LOSS, RAGGED, "seq-mean-token-mean").item() == pytest.approx(2.75)


# ---------------------------------------------------------------------------------------- value loss

V, V_OLD, R = tok([1.0, 2.0]), tok([0.5, 2.0]), tok([2.0, 1.0])
MASK2 = torch.ones(1, 2, dtype=torch.bool)


def test_value_loss_squared_unclipped_and_clipped():
    # unclipped: 0.5*(1-2)^2 = 0.5, 0.5*(2-1)^2 = 0.5 -> 0.5
    loss, m = value_loss(V, V_OLD, R, MASK2)
    assert loss.item() == pytest.approx(0.5) and m["vf_clip_frac"] == 0.0
    assert m["value_mean"] == pytest.approx(1.5)
    # clip 0.2: V_clip = [0.5 + 0.2, 2.0] = [0.7, 2.0]; err(V_clip) = [0.5*1.3^2 = 0.845, 0.5]
    # max -> [0.845, 0.5] -> mean 0.6725; only token 0 took the clipped branch
    v = V.clone().requires_grad_(True)
    loss, m = value_loss(v, V_OLD, R, MASK2, clip=0.2)
    assert loss.item() == pytest.approx(0.6725) and m["vf_clip_frac"] == pytest.approx(0.5)
    loss.backward()
    assert v.grad[0].tolist() == pytest.approx([0.0, 0.5])  # token 0 clipped; token 1: (2-1)/2


def test_value_loss_huber():
    # delta 1: |1-1.5| = 0.5 < 1 -> 0.5*0.25 = 0.125 ; |4-1| = 3 -> 1*(3 - 0.5) = 2.5 ; mean 1.3125
    v, r = tok([1.0, 4.0]), tok([1.5, 1.0])
    loss, _ = value_loss(v, v, r, MASK2, kind="huber", huber_delta=1.0)
    assert loss.item() == pytest.approx(1.3125)
    # delta 2: 0.125 ; 2*(3 - 1) = 4 ; mean 2.0625
    assert value_loss(v, v, r, MASK2, kind="huber", huber_delta=2.0)[0].item() == pytest.approx(2.0625)
    # clipped huber, V_old = [1, 5], clip 0.5 -> V_clip = [1.0, 4.5]; err(V_clip) = [0.125, 1*(3.5 - 0.5) = 3.0]
    # max -> [0.125, 3.0] -> mean 1.5625; token 1 took the clipped branch
    loss, m = value_loss(v, tok([1.0, 5.0]), r, MASK2, clip=0.5, kind="huber")
    assert loss.item() == pytest.approx(1.5625) and m["vf_clip_frac"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        value_loss(v, v, r, MASK2, kind="l1")


def test_explained_variance_hand():
    # R = [1,2,3,4], V = [1,2,3,3]: R-V = [0,0,0,1], Var = 0.1875; Var[R] = 1.25 -> 1 - 0.15 = 0.85
    # A fifth, masked entry with a wild value must not matter.
    r, v = tok([1.0, 2.0, 3.0, 4.0, 0.0]), tok([1.0, 2.0, 3.0, 3.0, 1e6])
    mask = tok([1, 1, 1, 1, 0]).bool()
    assert value_loss(v, v, r, mask)[1]["explained_variance"] == pytest.approx(0.85)
    # constant returns: defined as 0
    assert value_loss(v, v, tok([2.0] * 5), mask)[1]["explained_variance"] == 0.0


# ------------------------------------------------------------------------------------------------ KL


def test_kl_estimators_hand_values():
    # logprob = log 0.5, ref = log 0.25 -> log r = log 0.5 = -0.693147, r = 0.5
    logp, ref = tok([math.log(0.5)]), tok([math.log(0.25)])
    lr = math.log(0.5)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(-lr)  # 0.693147
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * lr**2)  # 0.240227
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx((0.5 - 1) - lr)  # 0.193147
    with pytest.raises(ValueError, match="k3"):
        kl_penalty(logp, ref, "k4")


def test_kl_k3_nonnegative_and_zero_at_equality():
    g = torch.Generator().manual_seed(3)
    logp, ref = torch.randn(64, 16, generator=g) * 3, torch.randn(64, 16, generator=g) * 3
    assert (kl_penalty(logp, ref, "k3") >= 0).all()
    assert (kl_penalty(logp, ref, "k1") < 0).any()  # k1 is not pointwise non-negative
    assert torch.equal(kl_penalty(logp, logp, "k3"), torch.zeros(64, 16))


# ---------------------------------------------------------------------------------------- registries


def test_advantage_registry():
    assert set(ADVANTAGES) >= {"gae", "grpo", "rloo", "reinforce_pp"}
    assert get_advantage("grpo") is grpo
    with pytest.raises(ValueError) as exc:
        get_advantage("nope")
    for name in ("gae", "grpo", "rloo", "reinforce_pp"):
        assert name in str(exc.value)
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("gae")(lambda: None)


def _chunk_episode(reward, value, next_value, steps, terminated) -> Batch:
    """One episode (B = 1) of decisions with K = len(reward[0]) env steps each; per-step lists ``[T][K]``."""
    t, k = len(reward), len(reward[0])
    col = lambda x: torch.tensor(x).unsqueeze(1)  # [T, 1, ...]
    end = torch.zeros(t, 1, dtype=torch.bool)
    end[-1] = True
    return Batch(
        image=np.zeros((t, 1, 1, 2, 2, 3), np.uint8),
        proprio=np.zeros((t, 1, 1), np.float32),
        instruction=["x"],
        action_tokens=torch.zeros(t, 1, k, 1, dtype=torch.int64),
        actions=torch.zeros(t, 1, k, 1),
        chain=torch.zeros(t, 1, 0, k, 1),
        denoise_step=torch.full((t, 1), -1),
        logprob=torch.zeros(t, 1, k, 1),
        value=col(value),
        next_value=col(next_value),
        reward=col(reward),
        terminated=end & terminated,
        truncated=end & (not terminated),
        mask=torch.ones(t, 1, dtype=torch.bool),
        steps=col(steps),
        policy_version=torch.zeros(t, 1, dtype=torch.int64),
        group_id=torch.zeros(1, dtype=torch.int64),
        task=["x"],
        success=torch.tensor([terminated]),
    )


# Chunks of K = 3: the first runs 3 env steps (reward 0), the second ends by success after 2 (rewards 0, 1).
# The value head gives V before each env step: (0.5, 0.6, 0.7), then (0.8, 0.9, unused 0.95); next values
# in env-step order, 0 after the success and at the step not run.
TWO_CHUNKS = dict(
    reward=[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
    value=[[0.5, 0.6, 0.7], [0.8, 0.9, 0.95]],
    next_value=[[0.6, 0.7, 0.8], [0.9, 0.0, 0.0]],
    steps=[3, 2],
    terminated=True,
)


@pytest.mark.parametrize(("unit", "a0"), [("decision", 0.31), ("env_step", 0.1561)])
def test_gae_over_two_chunks_by_hand_through_the_estimator(unit, a0):
    """Chunk granularity: rewards (0, 1), V = (0.5, 0.8), gamma=0.9, lam=0.5. Per decision: d1 = 1 - 0.8 = 0.2,
    d0 = 0.9 * 0.8 - 0.5 = 0.22, A0 = 0.22 + 0.9 * 0.5 * 0.2 = 0.31. Per env step the first chunk discounts by
    0.9^3 = 0.729: d0 = 0.729 * 0.8 - 0.5 = 0.0832, A0 = 0.0832 + 0.729 * 0.5 * 0.2 = 0.1561. A1 = 0.2 either way.
    """
    algo = AlgoConfig(name="ppo", gamma=0.9, lam=0.5, norm_adv=False, step_weight="step", discount_unit=unit)
    adv, ret = advantages(_chunk_episode(**TWO_CHUNKS), algo)
    assert adv.shape == (2, 1, 1)
    torch.testing.assert_close(adv[:, 0, 0], torch.tensor([a0, 0.2]))
    torch.testing.assert_close(ret[:, 0, 0], torch.tensor([a0 + 0.5, 1.0]))


def test_gae_over_two_chunks_by_hand_at_action_granularity():
    """Five env steps, r = (0, 0, 0, 0, 1), V = (0.5, 0.6, 0.7, 0.8, 0.9), gamma 0.9 per env step, lam 0.5:
    deltas 0.04, 0.03, 0.02, 0.01, 0.1; A4 = 0.1, A3 = 0.01 + 0.45 * 0.1 = 0.055, A2 = 0.04475,
    A1 = 0.0501375, A0 = 0.062561875; the step not run gets 0."""
    for unit in ("decision", "env_step"):  # action granularity always discounts per env step
        algo = AlgoConfig(
            name="ppo", gamma=0.9, lam=0.5, norm_adv=False, step_weight="step", reward_granularity="action"
        )
        algo.discount_unit = unit
        adv, ret = advantages(_chunk_episode(**TWO_CHUNKS), algo)
        want = torch.tensor([[0.062561875, 0.0501375, 0.04475], [0.055, 0.1, 0.0]])
        torch.testing.assert_close(adv[:, 0], want)
        torch.testing.assert_close(ret[:, 0], torch.where(want != 0, want + torch.tensor(TWO_CHUNKS["value"]), 0.0))


def test_action_granularity_loop_reference_with_truncation_inside_a_chunk():
    """A slow per-env-step loop over random chunked rollouts (B = 3, mixed ends) equals the estimator."""
    g = torch.Generator().manual_seed(0)
    t, k = 4, 3
    steps = [[3, 3, 3, 2], [3, 1, 0, 0], [3, 3, 3, 3]]  # per env: decisions' env steps (0: after its end)
    ends = ["terminated", "truncated", "truncated"]
    reward, value = torch.rand(t, 3, k, generator=g), torch.rand(t, 3, k, generator=g)
    cut = torch.rand(3, generator=g)
    seqs = []
    for b in range(3):
        r = [reward[i, b, j].item() for i in range(t) for j in range(steps[b][i])]
        v = [value[i, b, j].item() for i in range(t) for j in range(steps[b][i])]
        boot = 0.0 if ends[b] == "terminated" else cut[b].item()
        adv, last = [0.0] * len(r), 0.0
        for i in reversed(range(len(r))):
            nxt = v[i + 1] if i + 1 < len(r) else boot
            last = r[i] + 0.9 * nxt - v[i] + 0.9 * 0.8 * (last if i + 1 < len(r) else 0.0)
            adv[i] = last
        seqs.append(adv)
    st = torch.tensor(steps).T
    valid = torch.arange(k) < st.unsqueeze(-1)
    mask = st > 0
    last_t = mask.sum(0) - 1
    term = torch.zeros(t, 3, dtype=torch.bool)
    trunc = torch.zeros(t, 3, dtype=torch.bool)
    cut_value = torch.zeros(t, 3, k)
    for b in range(3):
        (term if ends[b] == "terminated" else trunc)[last_t[b], b] = True
        cut_value[last_t[b], b, st[last_t[b], b] - 1] = 0.0 if ends[b] == "terminated" else cut[b]
    batch = Batch(
        image=np.zeros((t, 3, 1, 2, 2, 3), np.uint8),
        proprio=np.zeros((t, 3, 1), np.float32),
        instruction=["x"] * 3,
        action_tokens=torch.zeros(t, 3, k, 1, dtype=torch.int64),
        actions=torch.zeros(t, 3, k, 1),
        chain=torch.zeros(t, 3, 0, k, 1),
        denoise_step=torch.full((t, 3), -1),
        logprob=torch.zeros(t, 3, k, 1),
        value=value,
        next_value=next_values(value, st, cut_value),
        reward=reward * valid,
        terminated=term,
        truncated=trunc,
        mask=mask,
        steps=st,
        policy_version=torch.zeros(t, 3, dtype=torch.int64),
        group_id=torch.arange(3),
        task=["x"] * 3,
        success=torch.tensor([True, False, False]),
    )
    algo = AlgoConfig(name="ppo", gamma=0.9, lam=0.8, norm_adv=False, step_weight="step", reward_granularity="action")
    adv, _ = advantages(batch, algo)
    for b in range(3):
        torch.testing.assert_close(adv[:, b][valid[:, b]], torch.tensor(seqs[b]))
    assert (adv[~valid] == 0).all()


def test_next_values_by_hand_in_env_step_order():
    """K = 2, one env: decision 0 runs 2 steps, decision 1 is truncated after 1 (V(final) = 0.7)."""
    value = torch.tensor([[[0.1, 0.2]], [[0.3, 0.4]]])
    cut = torch.tensor([[[0.0, 0.0]], [[0.7, 0.0]]])
    got = next_values(value, torch.tensor([[2], [1]]), cut)
    torch.testing.assert_close(got, torch.tensor([[[0.2, 0.3]], [[0.7, 0.0]]]))


def test_return_score_discounts_by_env_steps_before_each_chunk():
    batch = _chunk_episode(
        reward=[[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]],
        value=[[0.0, 0.0]] * 3,
        next_value=[[0.0, 0.0]] * 3,
        steps=[1, 2, 1],
        terminated=True,
    )
    algo = AlgoConfig(name="grpo", gamma=0.5, discount_unit="env_step")
    steps = rl_steps(batch, algo)  # chunks of 1, 2 and 1 env steps: discounts 0.5, 0.25, 0.5
    torch.testing.assert_close(episode_scores(steps, batch.success, "return"), torch.tensor([1 + 0.5 + 0.125]))
    batch.steps = torch.tensor([[2], [2], [1]])  # full chunks until the last: rewards 1, 0, 0.5, 0.5, 1
    algo.reward_granularity = "action"  # per env step: 1 + 0.25 * 0.5 + 0.125 * 0.5 + 0.0625 * 1
    steps = rl_steps(batch, algo)
    torch.testing.assert_close(episode_scores(steps, batch.success, "return"), torch.tensor([1.25]))
