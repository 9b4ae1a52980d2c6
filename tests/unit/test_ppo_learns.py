"""A short PPO run on a tiny problem improves its return (the algorithms package end to end).

The problem: a 2-step chain per episode, 8 actions per step, reward 1 at the end only if both
actions hit their targets; a softmax policy and a value table. GAE + clipped PPO must lift the
success rate from chance (1/64) to near 1 in a few dozen iterations.
"""

import torch

from vlarl import algorithms


def test_ppo_improves_return_on_a_tiny_problem():
    torch.manual_seed(0)
    logits = torch.zeros(2, 8, requires_grad=True)  # one categorical per step
    values = torch.zeros(3, requires_grad=True)  # V(step 0), V(step 1), unused terminal slot
    opt = torch.optim.Adam([logits, values], lr=0.1)
    target = torch.tensor([3, 5])
    n = 256

    def rollout():
        with torch.no_grad():
            dist = torch.distributions.Categorical(logits=logits)
            a = dist.sample((n,))  # [n, 2]
            old_logp = dist.log_prob(a)  # [n, 2]
        success = (a == target).all(1).float()
        reward = torch.stack([torch.zeros(n), success], dim=0)  # [T=2, B=n]
        terminated = torch.stack([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
        v = values[:2].detach().unsqueeze(1).expand(2, n)
        next_v = torch.stack([values[1].detach().expand(n), torch.zeros(n)])
        adv, ret = algorithms.gae(reward, v, next_v, terminated, torch.zeros_like(terminated), 1.0, 0.95)
        return a, old_logp, algorithms.normalize(adv), ret, success.mean().item()

    first = rollout()[-1]
    for _ in range(40):
        a, old_logp, adv, ret, _ = rollout()
        for _ in range(4):
            logp = torch.distributions.Categorical(logits=logits).log_prob(a).T  # [T, B]
            mask = torch.ones_like(logp, dtype=torch.bool)
            pg, _ = algorithms.ppo_policy_loss(logp, old_logp.T, adv, mask, 0.2, 0.28)
            vl, _ = algorithms.value_loss(
                values[:2].unsqueeze(1).expand(2, n), values[:2].detach().unsqueeze(1).expand(2, n), ret, mask
            )
            opt.zero_grad()
            (pg + 0.5 * vl).backward()
            opt.step()
    last = rollout()[-1]
    assert first < 0.1
    assert last > 0.8
    assert values[0].item() > 0.5  # the critic learnt that the start state now usually succeeds
