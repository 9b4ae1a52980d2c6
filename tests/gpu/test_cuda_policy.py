"""GPU checks of the tiny policy (skipped, with the reason printed, on machines without CUDA)."""

import numpy as np
import pytest
import torch

from vlarl.learner import autocast
from vlarl.policies.base import GREEDY
from vlarl.policies.openvla.factory import build_policy

pytestmark = pytest.mark.gpu


def _obs():
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (4, 1, 64, 64, 3), dtype=np.uint8),
        "instruction": ["reach the goal position"] * 4,
    }


def test_cuda_rollout_matches_learner_and_cpu():
    torch.manual_seed(0)
    cpu = build_policy("tiny", 4).eval()
    gpu = build_policy("tiny", 4).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    out = gpu.act(_obs(), GREEDY)
    logp, _, value = gpu.evaluate(out.inputs, out.tokens)
    torch.testing.assert_close(logp, out.logprob, atol=1e-4, rtol=0)
    ref = cpu.act(_obs(), GREEDY)
    assert torch.equal(ref.tokens, out.tokens.cpu())
    torch.testing.assert_close(value.cpu(), ref.value, atol=1e-3, rtol=0)


def test_bf16_autocast_sft_step_lowers_the_loss():
    torch.manual_seed(0)
    policy = build_policy("tiny", 4).cuda()
    inputs = policy.prepare(_obs())
    targets = policy.encode_actions(np.zeros((4, 1, 4)))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        with autocast(policy.device, "auto"):
            loss, _ = policy.sft_loss(inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
