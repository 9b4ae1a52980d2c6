"""LIBERO's demonstration files (robomimic-style HDF5, one per task) into the vlarl demos format.

Layout read (``<task name>_demo.hdf5``, as LIBERO's datasets ship; get them from the LIBERO project's
dataset download, e.g. ``libero_spatial.zip``): group ``data`` with attribute ``problem_info`` (JSON holding
``language_instruction``); per demonstration ``data/demo_<i>/``:

    actions              float [T, 7]           delta end-effector pose and gripper (LIBERO's sign: +1 close)
    obs/agentview_rgb    uint8 [T, H, W, 3]     as rendered (upside down): rotated by 180 degrees here, as the
    obs/eye_in_hand_rgb  uint8 [T, H, W, 3]     libero env does, and resized to ``image_size``
    obs/ee_pos           float [T, 3]
    obs/ee_ori           float [T, 3]           axis-angle
    obs/gripper_states   float [T, 2]
    rewards, dones       [T]                    optional: success is the last step otherwise

``proprio`` is ``ee_pos, ee_ori, gripper_states`` (8), the libero env's. Needs ``h5py`` (the libero extra).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlarl.data.dataset import DemoWriter

IMAGE_KEYS = {"agentview": "agentview_rgb", "robot0_eye_in_hand": "eye_in_hand_rgb"}
PROPRIO_KEYS = ("ee_pos", "ee_ori", "gripper_states")


def _views(obs: Any, cameras: list[str], size: int) -> np.ndarray:
    """``[T, V, size, size, 3]`` uint8, rotated by 180 degrees."""
    views = []
    for cam in cameras:
        frames = np.asarray(obs[IMAGE_KEYS[cam]])[:, ::-1, ::-1]
        if frames.shape[1] != size:
            frames = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])
        views.append(frames)
    return np.stack(views, axis=1).astype(np.uint8)


def read_file(path: str | Path, cameras: list[str], image_size: int) -> tuple[str, list[dict[str, np.ndarray]]]:
    """The instruction of one task file and its demonstrations as vlarl episode arrays (``DemoWriter`` fields)."""
    import h5py

    with h5py.File(path, "r") as f:
        if "data" not in f or "problem_info" not in f["data"].attrs:
            raise ValueError(f"{path}: not a LIBERO demo file (no data group with a problem_info attribute)")
        instruction = json.loads(f["data"].attrs["problem_info"])["language_instruction"]
        episodes = []
        for name in sorted(f["data"], key=lambda k: int(k.rpartition("_")[2])):
            demo = f["data"][name]
            missing = [k for k in (*(IMAGE_KEYS[c] for c in cameras), *PROPRIO_KEYS) if k not in demo["obs"]]
            if missing:
                raise ValueError(f"{path}: data/{name}/obs lacks {missing}")
            action = np.asarray(demo["actions"], np.float32)
            t = len(action)
            success = np.asarray(demo["dones"], bool) if "dones" in demo else np.arange(t) == t - 1
            episodes.append(
                {
                    "image": _views(demo["obs"], cameras, image_size),
                    "proprio": np.concatenate([np.asarray(demo["obs"][k], np.float32) for k in PROPRIO_KEYS], 1),
                    "state": np.zeros((t, 0), np.float32),
                    "action": np.clip(action, -1.0, 1.0),
                    "reward": np.asarray(demo["rewards"], np.float32)
                    if "rewards" in demo
                    else success.astype(np.float32),
                    "success": success,
                }
            )
    return instruction, episodes


def convert(
    files: list[Path],
    root: str | Path,
    task_of: Callable[[str, str], str],
    cameras: list[str],
    image_size: int,
    info: dict[str, Any] | None = None,
) -> tuple[Path, dict[str, int]]:
    """Write the demonstrations of ``files`` as a vlarl dataset at ``root``; ``task_of(file stem, instruction)``
    names each file's task; ``info`` joins the dataset's metadata. Returns the path and the episodes per task."""
    if not files:
        raise FileNotFoundError("no LIBERO demo files (*.hdf5) to import")
    writer = DemoWriter(root)
    counts: dict[str, int] = {}
    instructions: dict[str, str] = {}
    try:
        for path in sorted(files):
            instruction, episodes = read_file(path, cameras, image_size)
            task = task_of(Path(path).stem.removesuffix("_demo"), instruction)
            instructions[task] = instruction
            for episode in episodes:
                writer.add_episode(task, instruction, episode)
            counts[task] = len(episodes)
        meta = {"backend": "libero", "tasks": list(counts), "instructions": instructions, "source": "hdf5"}
        writer.close(meta | (info or {}))
    except BaseException:
        writer.abort()
        raise
    return Path(root), counts
