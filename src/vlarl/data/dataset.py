"""The vlarl demonstrations format: a folder of per-episode ``.npz`` files plus JSON metadata.

LeRobot's format needs the ``lerobot``/``datasets`` stack (torchvision, pyarrow, video decoders),
too heavy for the default install, so vlarl uses a small documented layout instead::

    <root>/meta/info.json        format, version, counts, features {name: {dtype, shape}}, tasks,
                                 instructions, the collecting config and its hash
    <root>/meta/episodes.jsonl   one JSON object per episode: episode_index, task, instruction,
                                 length, success, file
    <root>/data/episode_000000.npz   arrays (6-digit episode index) with leading dim T (steps):
        image   uint8   [T, V, H, W, 3]  observation before the action (upright)
        proprio float32 [T, P]
        state   float32 [T, S]           privileged simulator state
        action  float32 [T, A]           action executed, in [-1, 1]
        reward  float32 [T]              reward after the action
        success bool    [T]              simulator success after the action

The folder is written atomically (a reader never sees a partial dataset); arrays are stored
losslessly (``np.savez_compressed``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vlarl.utils.io import atomic_dir, atomic_write_json

FORMAT, VERSION = "vlarl-demos", 1
FIELDS = {
    "image": "uint8",
    "proprio": "float32",
    "state": "float32",
    "action": "float32",
    "reward": "float32",
    "success": "bool",
}


class DemoWriter:
    """Collects episodes in a temporary folder; ``close(info)`` publishes it at ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._ctx = atomic_dir(self.root)
        self._tmp = self._ctx.__enter__()
        (self._tmp / "data").mkdir()
        self.episodes: list[dict[str, Any]] = []
        self.features: dict[str, dict] = {}

    def add_episode(self, task: str, instruction: str, arrays: dict[str, np.ndarray]) -> None:
        missing = set(FIELDS) - set(arrays)
        if missing:
            raise ValueError(f"episode lacks fields {sorted(missing)}")
        arrays = {k: np.asarray(arrays[k], dtype=FIELDS[k]) for k in FIELDS}
        length = len(arrays["action"])
        if any(len(a) != length for a in arrays.values()):
            raise ValueError(f"episode arrays differ in length: { {k: len(a) for k, a in arrays.items()} }")
        features = {k: {"dtype": FIELDS[k], "shape": list(a.shape[1:])} for k, a in arrays.items()}
        if self.features and features != self.features:
            raise ValueError(f"episode features {features} differ from earlier ones {self.features}")
        self.features = features
        index = len(self.episodes)
        file = f"data/episode_{index:06d}.npz"
        np.savez_compressed(self._tmp / file, **arrays)
        self.episodes.append(
            {
                "episode_index": index,
                "task": task,
                "instruction": instruction,
                "length": length,
                "success": bool(arrays["success"].any()),
                "file": file,
            }
        )

    def close(self, info: dict[str, Any]) -> Path:
        """Write the metadata and publish the folder; ``info`` is merged into ``meta/info.json``."""
        (self._tmp / "meta").mkdir()
        with open(self._tmp / "meta" / "episodes.jsonl", "w") as f:
            for ep in self.episodes:
                f.write(json.dumps(ep) + "\n")
        atomic_write_json(
            self._tmp / "meta" / "info.json",
            {
                "format": FORMAT,
                "version": VERSION,
                "num_episodes": len(self.episodes),
                "num_frames": sum(ep["length"] for ep in self.episodes),
                "features": self.features,
                **info,
            },
        )
        self._ctx.__exit__(None, None, None)
        return self.root

    def abort(self) -> None:
        """Drop everything written so far; ``root`` is left as it was."""
        try:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass


class DemoDataset:
    """Read a dataset written by ``DemoWriter``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"{self.root} is not a vlarl demos dataset (no meta/info.json)")
        self.info = json.loads(info_path.read_text())
        if self.info.get("format") != FORMAT or self.info.get("version") != VERSION:
            raise ValueError(
                f"{self.root}: format {self.info.get('format')} v{self.info.get('version')}, "
                f"expected {FORMAT} v{VERSION}"
            )
        with open(self.root / "meta" / "episodes.jsonl") as f:
            self.episodes = [json.loads(line) for line in f if line.strip()]

    def __len__(self) -> int:
        return len(self.episodes)

    def episode(self, i: int) -> dict[str, np.ndarray]:
        with np.load(self.root / self.episodes[i]["file"], allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def frames(self) -> dict[str, Any]:
        """All steps concatenated: each field ``[N, ...]``, plus ``episode_index`` [N] and ``instruction``."""
        parts = [self.episode(i) for i in range(len(self))]
        out = {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}
        out["episode_index"] = np.concatenate([np.full(ep["length"], ep["episode_index"]) for ep in self.episodes])
        out["instruction"] = [ep["instruction"] for ep in self.episodes for _ in range(ep["length"])]
        return out


def action_chunks(action: np.ndarray, episode_index: np.ndarray, k: int) -> np.ndarray:
    """Per frame, its action and the next ``k - 1`` of its episode: ``[N, A]`` -> ``[N, k, A]``.

    Near an episode's end the chunk is padded with the episode's last action (frames of one episode are
    contiguous, in order).
    """
    n = len(action)
    ahead = np.arange(n)[:, None] + np.arange(k)[None, :]  # [N, k]
    ends = np.flatnonzero(np.r_[episode_index[1:] != episode_index[:-1], True])
    last = np.repeat(ends, np.diff(np.r_[-1, ends]))  # [N] the last frame of each frame's episode
    return action[np.minimum(ahead, last[:, None])]
