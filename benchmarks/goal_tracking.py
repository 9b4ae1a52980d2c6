"""Goal tracking on MetaWorld's reach: does the policy go where the goal is, axis by axis?

Reach's goal is a random 3-D point (x 20 cm, y 10 cm, z 25 cm wide) that an image policy sees only as the green
marker (``env.goal_marker_size``). Two measurements with the preset's ``env.cameras``:

1. pixels: how far the marker moves in each camera's first frame per 10 cm of goal offset along x, y and z (a
   least-squares fit over the states): one view shows two directions; depth along its rays is a few pixels of
   marker size at most;
2. tracking: greedy rollouts (the ODE for pi0, argmax for tokens) of the preset's SFT policy and of the scripted
   expert from the same states; per axis, the slope and correlation of the closest point's offset from the start
   on the goal's offset (1 and 1: follows the goal; 0: ignores it), the closest distance and success.

    python benchmarks/goal_tracking.py [--preset metaworld_mt3_pi0_tiny] [--states 24] [--set key=value ...]

Prints both tables; writes ``benchmarks/results/goal_tracking.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from vlarl import envs  # noqa: E402
from vlarl.config import load_config  # noqa: E402
from vlarl.envs.metaworld import goal_marker_mask  # noqa: E402
from vlarl.policies import make_policy  # noqa: E402
from vlarl.policies.base import GREEDY  # noqa: E402
from vlarl.sft import start_checkpoint  # noqa: E402

HAND, GOAL = slice(0, 3), slice(36, 39)  # MetaWorld's 39-dim observation: end-effector xyz, goal xyz
AXES = ("x", "y", "z")


def marker_pixels(obs: dict, cameras: list[str]) -> dict:
    """Per camera: pixels the marker's centre moves per 10 cm of goal offset, ``[axis][u, v]``, and its size."""
    goal = obs["state"][:, GOAL]
    out = {}
    for c, cam in enumerate(cameras):
        mask = goal_marker_mask(obs["image"][:, c])
        seen = mask.reshape(len(mask), -1).any(1)
        centre = np.array([np.argwhere(m).mean(0)[::-1] if m.any() else (np.nan, np.nan) for m in mask])
        design = np.c_[goal - goal.mean(0), np.ones(len(goal))][seen]
        coef = np.linalg.lstsq(design, centre[seen], rcond=None)[0][:3] * 0.1
        out[cam] = {"px_per_10cm": coef.round(2).tolist(), "marker_px": float(mask.sum((1, 2)).mean())}
    return out


def rollout(venv, seeds: list[int], act, max_steps: int) -> dict:
    """Greedy episodes from ``seeds``; ``act(obs) -> [B, K, A]``. Closest point, distance and success per env."""
    obs = venv.reset(options={"task": ["reach-v3"] * len(seeds), "init_seed": seeds})
    start, goal = obs["state"][:, HAND].copy(), obs["state"][:, GOAL].copy()
    closest, best = start.copy(), np.linalg.norm(goal - start, axis=1)
    done, success = np.zeros(len(seeds), bool), np.zeros(len(seeds), bool)
    for _ in range(max_steps):
        obs, _, term, trunc, info = venv.step_chunk(act(obs))
        ended = term.any(1) | trunc.any(1)
        hand = np.where(ended[:, None], info["final_state"][:, HAND], obs["state"][:, HAND])
        dist = np.linalg.norm(hand - goal, axis=1)
        closer = ~done & (dist < best)
        closest[closer], best[closer] = hand[closer], dist[closer]
        success |= ~done & info["episode_success"]
        done |= ended
        if done.all():
            break
    return {"offset": goal - start, "reached": closest - start, "distance": best, "success": success}


def tracking(run: dict) -> dict:
    """Per axis: slope and correlation of the closest point's offset on the goal's offset; distance, success."""
    out = {"success": float(run["success"].mean()), "closest_cm": float(100 * run["distance"].mean())}
    for i, axis in enumerate(AXES):
        goal, reached = run["offset"][:, i], run["reached"][:, i]
        out[f"slope_{axis}"] = float(np.polyfit(goal, reached, 1)[0])
        out[f"corr_{axis}"] = float(np.corrcoef(goal, reached)[0, 1]) if reached.std() > 0 else 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="metaworld_mt3_pi0_tiny")
    parser.add_argument("--states", type=int, default=24)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides key=value")
    args = parser.parse_args()
    console = Console(width=120)
    cfg = load_config("train", args.preset, overrides=args.overrides)
    checkpoint = start_checkpoint(cfg, console)  # the preset's SFT, trained on all of its tasks
    seeds = [int(s) for s in np.random.default_rng(args.seed).integers(2**31, size=args.states)]
    venv = envs.make(dataclasses.replace(cfg.env, tasks=["reach-v3"], num_envs=args.states))
    spec = venv.spec
    policy = make_policy(dataclasses.replace(cfg.policy, checkpoint=str(checkpoint)), spec.action_dim, spec.proprio_dim)
    expert = envs.make_expert("metaworld", "reach-v3")
    decisions = -(-cfg.env.max_episode_steps // policy.chunk_len)
    try:
        pixels = marker_pixels(venv.reset(options={"init_seed": seeds}), list(cfg.env.cameras))
        with torch.no_grad():
            runs = {
                "policy": tracking(rollout(venv, seeds, lambda o: policy.act(o, GREEDY).actions, decisions)),
                "expert": tracking(
                    rollout(venv, seeds, lambda o: np.stack([expert(s) for s in o["state"]])[:, None], 10**6)
                ),
            }
    finally:
        venv.close()
    table = Table(title=f"marker pixels per 10 cm of goal offset ({cfg.env.image_size} px)")
    for col in ("camera", *(f"{a} (u, v)" for a in AXES), "marker px"):
        table.add_column(col, justify="left" if col == "camera" else "right")
    for cam, p in pixels.items():
        table.add_row(cam, *(f"{u:+.1f}, {v:+.1f}" for u, v in p["px_per_10cm"]), f"{p['marker_px']:.0f}")
    console.print(table)
    table = Table(title=f"reach goal tracking, greedy, {args.states} states ({args.preset} {' '.join(args.overrides)})")
    for col in ("actor", "success", "closest cm", *(f"slope / corr {a}" for a in AXES)):
        table.add_column(col, justify="left" if col == "actor" else "right")
    for name, r in runs.items():
        axes = (f"{r[f'slope_{a}']:.2f} / {r[f'corr_{a}']:.2f}" for a in AXES)
        table.add_row(name, f"{r['success']:.0%}", f"{r['closest_cm']:.1f}", *axes)
    console.print(table)
    payload = {"preset": args.preset, "overrides": args.overrides, "checkpoint": str(checkpoint), "seeds": seeds}
    path = write_result("goal_tracking", payload | {"pixels": pixels, "tracking": runs}, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
