"""Pick a headless OpenGL backend for MuJoCo before ``mujoco`` is imported: EGL, else OSMesa."""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = "import mujoco; c = mujoco.GLContext(8, 8); c.make_current(); c.free()"
_BACKENDS = {"egl": {"MUJOCO_GL": "egl"}, "osmesa": {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}}


def _works(env: dict[str, str]) -> bool:
    try:
        res = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, **env}, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0


def ensure_gl() -> str:
    """Set ``MUJOCO_GL`` (inherited by worker processes) to a backend that works; return its name.

    A ``MUJOCO_GL`` already set by the user is kept. Raises RuntimeError when nothing works.
    """
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if "mujoco" in sys.modules:
        raise RuntimeError(
            "mujoco was imported before vlarl chose a headless GL backend, so it cannot render; "
            "set MUJOCO_GL=egl (or osmesa) in the environment, or create vlarl envs before importing mujoco."
        )
    for name, env in _BACKENDS.items():
        if _works(env):
            os.environ.update(env)
            return name
    raise RuntimeError(
        "no headless OpenGL backend works for MuJoCo (tried EGL and OSMesa). On Debian/Ubuntu install "
        "them with `sudo apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6` "
        "(`make setup` does this), or set MUJOCO_GL yourself."
    )
