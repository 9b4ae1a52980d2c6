"""Flow matching for a π0-style action expert, and the stochastic samplers that give its RL log-probs (πRL).

Convention (π0 / openpi, as LeRobot's ``PI0Pytorch.forward`` and ``sample_actions``, ``modeling_pi0.py``): time
``t = 1`` is pure noise and ``t = 0`` is the action chunk,

    x_t = t * noise + (1 - t) * action,        target velocity u = dx_t/dt = noise - action,

and training draws ``t = 0.999 * Beta(1.5, 1) + 0.001`` per sample (``time_sampling_beta_alpha/beta``,
``time_sampling_scale/offset`` in LeRobot's ``PI0Config``), so t is biased towards the noisy end. Sampling
integrates from ``t = 1`` to ``t = 0`` with N Euler steps of ``dt = -1/N`` on the grid ``t_i = 1 - i/N``.

A denoising chain ``chain [B, N + 1, K, A]`` holds ``x`` at ``t_0 = 1`` (index 0, the initial noise) to
``t_N = 0`` (index N, the action chunk). Step i goes from ``chain[:, i]`` at ``t_i`` to ``chain[:, i + 1]`` at
``t_i - delta`` with ``delta = 1/N``. From the velocity ``v`` at step i the two estimates of the end points are
``a_hat = x - t v`` (action) and ``e_hat = x + (1 - t) v`` (noise). The transitions (``noise_method``, RLinf's
``OpenPi0ForRLActionPrediction.sample_mean_var_val``, ``rlinf/models/embodiment/openpi/openpi_action_model.py``):

- ``flow_ode``: deterministic Euler, ``x_next = x - delta v`` (no log-prob).
- ``flow_sde``: the reverse-time SDE whose marginals match the ODE's, one Euler-Maruyama step with the score
  ``-e_hat / t`` of the linear interpolation: ``x_next ~ N(x - delta (v + sigma_t^2 / (2 t) e_hat),
  sigma_t^2 delta I)`` with ``sigma_t = noise_level * sqrt(t / (1 - t))``; at ``t = 1`` the denominator uses
  ``1 - t_1`` (RLinf's rule; ``sigma_0 = noise_level * sqrt(N)``). ``noise_level -> 0`` gives ``flow_ode``.
- ``flow_noise``: a learnt per-element std (a noise head on the expert's features) around the Euler mean,
  ``x_next ~ N(x - delta v, exp(log_std)^2)``.

Log-probs are per element (the Gaussian log-density of each of the K x A numbers); summing over steps
(``joint``) or taking one step (πRL's one-random-denoise-step option) is ``reduce_log_prob``'s choice. The
density of the initial noise is left out: it does not depend on the policy, so it cancels in PPO ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vlarl.policies.base import Generator, randn

METHODS = ("flow_ode", "flow_sde", "flow_noise")

StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
"""``(x_t [B, K, A], t [B]) -> (velocity [B, K, A], log_std [B, K, A] or None)``; log_std only for flow_noise."""


def sample_time(
    batch: int,
    alpha: float = 1.5,
    beta: float = 1.0,
    scale: float = 0.999,
    offset: float = 0.001,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training times ``[B]``: ``scale * Beta(alpha, beta) + offset`` (π0's defaults; global torch RNG)."""
    dist = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(beta)))
    return (dist.sample((batch,)) * scale + offset).to(device=device, dtype=torch.float32)


def interpolate(actions: torch.Tensor, noise: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    """``x_t = t * noise + (1 - t) * actions``; ``actions, noise [B, K, A]``, ``time [B]``."""
    t = time[:, None, None]
    return t * noise + (1 - t) * actions


def flow_matching_loss(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    actions: torch.Tensor,
    noise: torch.Tensor,
    time: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between ``velocity_fn(x_t, t) [B, K, A]`` and ``noise - actions`` (a scalar).

    ``mask [B, K, A]`` (1 = counts; e.g. real action dims of a padded ``max_action_dim``) averages over the
    masked-in elements only.
    """
    err = (velocity_fn(interpolate(actions, noise, time), time) - (noise - actions)).square()
    if mask is None:
        return err.mean()
    mask = mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def time_grid(num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[N + 1]``: ``t_i = 1 - i / N``, from 1 (noise) to exactly 0 (action)."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps}: at least one denoising step")
    return 1 - torch.arange(num_steps + 1, dtype=torch.float32, device=device) / num_steps


def sde_sigma(num_steps: int, noise_level: float, device: torch.device | str | None = None) -> torch.Tensor:
    """Flow-SDE's diffusion scale ``sigma_t [N]`` at ``t_0..t_{N-1}``: ``noise_level * sqrt(t / (1 - t))``,
    with ``1 - t_1`` in the denominator at ``t = 1`` (RLinf)."""
    t = time_grid(num_steps, device)[:-1]
    denom = 1 - torch.where(t == 1, torch.full_like(t, 1 - 1 / num_steps), t)
    return noise_level * torch.sqrt(t / denom)


def transition(
    x: torch.Tensor,
    velocity: torch.Tensor,
    t: torch.Tensor,
    delta: float,
    method: str,
    sigma: torch.Tensor | None = None,
    log_std: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of ``x_{t - delta}`` given ``x_t`` (shapes ``[..., K, A]``; ``t``, ``sigma`` broadcast to them).

    ``flow_ode`` returns std 0; ``flow_sde`` needs ``sigma`` (``sde_sigma`` at t); ``flow_noise`` needs ``log_std``.
    """
    if method == "flow_ode":
        return x - delta * velocity, torch.zeros_like(x)
    if method == "flow_sde":
        noise_hat = x + (1 - t) * velocity
        mean = x - delta * (velocity + sigma.square() / (2 * t) * noise_hat)
        return mean, (sigma * math.sqrt(delta)).expand_as(x)
    if method == "flow_noise":
        return x - delta * velocity, log_std.exp().expand_as(x)
    raise ValueError(f"noise_method={method!r}; choose one of {METHODS}")


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise ``log N(x; mean, std^2)``."""
    return -0.5 * ((x - mean) / std).square() - std.log() - 0.5 * math.log(2 * math.pi)


def gaussian_entropy(std: torch.Tensor) -> torch.Tensor:
    """Elementwise entropy ``0.5 * log(2 pi e std^2)`` of a step's Gaussian (Flow-Noise's entropy bonus; Flow-SDE's
    std does not depend on the policy, so its entropy carries no gradient)."""
    return std.log() + 0.5 * (math.log(2 * math.pi) + 1)


@dataclass
class FlowSample:
    """One sampled chunk and the record the learner needs to recompute its log-probs.

    ``actions [B, K, A]`` (= ``chain[:, -1]``), ``chain [B, N + 1, K, A]``, ``velocities [B, N, K, A]``,
    ``log_probs [B, N, K, A]`` (0 at deterministic steps; all 0 for ``flow_ode``), ``stochastic [B, N]`` bool.
    """

    actions: torch.Tensor
    chain: torch.Tensor
    velocities: torch.Tensor
    log_probs: torch.Tensor
    stochastic: torch.Tensor


def stochastic_steps(
    batch: int, num_steps: int, denoise_step: torch.Tensor | None, device: torch.device | str | None = None
) -> torch.Tensor:
    """``[B, N]`` bool: every step (``denoise_step=None``, joint log-prob) or only step ``denoise_step [B]``."""
    if denoise_step is None:
        return torch.ones(batch, num_steps, dtype=torch.bool, device=device)
    steps = torch.arange(num_steps, device=device)
    return steps[None, :] == denoise_step.to(device)[:, None]


@torch.no_grad()
def sample(
    step_fn: StepFn,
    noise: torch.Tensor,
    num_steps: int,
    method: str = "flow_sde",
    noise_level: float = 0.5,
    denoise_step: torch.Tensor | None = None,
    generator: Generator = None,
) -> FlowSample:
    """Denoise ``noise [B, K, A]`` over N steps with ``method``; ``denoise_step [B]`` makes only that step of each
    row stochastic (the others follow the ODE), as πRL's one-step training option; ``None`` = every step."""
    if method not in METHODS:
        raise ValueError(f"noise_method={method!r}; choose one of {METHODS}")
    if method == "flow_sde" and noise_level <= 0:
        raise ValueError(f"flow_sde with noise_level={noise_level}: a log-prob needs noise (use flow_ode for none)")
    b = noise.shape[0]
    grid = time_grid(num_steps, noise.device)
    sigma = sde_sigma(num_steps, noise_level, noise.device)
    stochastic = stochastic_steps(b, num_steps, denoise_step, noise.device)
    if method == "flow_ode":
        stochastic = torch.zeros_like(stochastic)
    x, chain, velocities, log_probs = noise.float(), [noise.float()], [], []
    for i in range(num_steps):
        t = grid[i].expand(b)
        v, log_std = step_fn(x, t)
        if method == "flow_noise" and log_std is None:
            raise ValueError("flow_noise needs a step_fn that returns the noise head's log_std")
        ode_mean, _ = transition(x, v, grid[i], 1 / num_steps, "flow_ode")
        if method == "flow_ode":
            x_next, logp = ode_mean, torch.zeros_like(x)
        else:
            mean, std = transition(x, v, grid[i], 1 / num_steps, method, sigma[i], log_std)
            z = randn(x.shape, generator, x.device, x.dtype)
            on = stochastic[:, i, None, None]
            x_next = torch.where(on, mean + std * z, ode_mean)
            logp = torch.where(on, gaussian_log_prob(x_next, mean, std), torch.zeros_like(x))
        chain.append(x_next)
        velocities.append(v)
        log_probs.append(logp)
        x = x_next
    return FlowSample(
        actions=x,
        chain=torch.stack(chain, 1),
        velocities=torch.stack(velocities, 1),
        log_probs=torch.stack(log_probs, 1),
        stochastic=stochastic,
    )


def chain_log_probs(
    chain: torch.Tensor,
    velocities: torch.Tensor,
    method: str,
    noise_level: float = 0.5,
    log_std: torch.Tensor | None = None,
    stochastic: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-step, per-element log-probs ``[B, N, K, A]`` of a recorded ``chain [B, N + 1, K, A]`` given the velocity
    ``velocities [B, N, K, A]`` (and, for flow_noise, ``log_std [B, N, K, A]``) at each step's start; 0 where
    ``stochastic [B, N]`` is False. All steps at once (vectorised over N)."""
    if method not in ("flow_sde", "flow_noise"):
        raise ValueError(f"noise_method={method!r} has no log-prob; use flow_sde or flow_noise")
    n = velocities.shape[1]
    t = time_grid(n, chain.device)[:-1][None, :, None, None]
    sigma = sde_sigma(n, noise_level, chain.device)[None, :, None, None]
    mean, std = transition(chain[:, :-1], velocities, t, 1 / n, method, sigma, log_std)
    logp = gaussian_log_prob(chain[:, 1:], mean, std)
    if stochastic is None:
        return logp
    return torch.where(stochastic[:, :, None, None], logp, torch.zeros_like(logp))


def recompute_log_probs(
    step_fn: StepFn,
    chain: torch.Tensor,
    method: str,
    noise_level: float = 0.5,
    stochastic: torch.Tensor | None = None,
) -> torch.Tensor:
    """The learner's side: re-run ``step_fn`` (with gradients) at each recorded ``chain [B, N + 1, K, A]`` point and
    return ``chain_log_probs`` ``[B, N, K, A]``. Steps with no stochastic row are skipped (their log-probs are 0);
    where each row has one stochastic step (``joint_logprob=false``), one call runs every row at its own step."""
    b, n1 = chain.shape[:2]
    n = n1 - 1
    stochastic = stochastic_steps(b, n, None, chain.device) if stochastic is None else stochastic
    grid = time_grid(n, chain.device)
    if bool((stochastic.sum(1) == 1).all()):
        rows, step = torch.arange(b, device=chain.device), stochastic.int().argmax(1)
        v, log_std = step_fn(chain[rows, step], grid[step])
        zeros = torch.zeros_like(chain[:, :-1])
        log_stds = zeros.index_put((rows, step), log_std) if method == "flow_noise" else None
        return chain_log_probs(chain, zeros.index_put((rows, step), v), method, noise_level, log_stds, stochastic)
    velocities, log_stds = [], []
    for i in range(n):
        if not bool(stochastic[:, i].any()):
            velocities.append(torch.zeros_like(chain[:, i]))
            log_stds.append(torch.zeros_like(chain[:, i]))
            continue
        v, log_std = step_fn(chain[:, i], grid[i].expand(b))
        velocities.append(v)
        log_stds.append(torch.zeros_like(v) if log_std is None else log_std)
    log_std = torch.stack(log_stds, 1) if method == "flow_noise" else None
    return chain_log_probs(chain, torch.stack(velocities, 1), method, noise_level, log_std, stochastic)


def reduce_log_prob(
    step_log_probs: torch.Tensor, joint: bool, denoise_step: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, N, K, A] -> [B, K, A]``: the sum over steps (``joint``; the chain's log-density given its start) or
    the log-prob of step ``denoise_step [B]`` alone."""
    if joint:
        return step_log_probs.sum(1)
    if denoise_step is None:
        raise ValueError("joint=False needs denoise_step, the sampled denoising step of each row")
    rows = torch.arange(step_log_probs.shape[0], device=step_log_probs.device)
    return step_log_probs[rows, denoise_step.to(step_log_probs.device)]
