"""Small rotation helpers shared by the backends and their experts (numpy, radians)."""

from __future__ import annotations

import numpy as np


def axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion ``[x, y, z, w]`` -> axis-angle ``[3]`` (the axis times the angle)."""
    quat = np.asarray(quat_xyzw, np.float64)
    w = np.clip(quat[3], -1.0, 1.0)
    den = np.sqrt(max(1.0 - w * w, 0.0))
    if den < 1e-8:
        return np.zeros(3)
    return quat[:3] * 2.0 * np.arccos(w) / den


def yaw(quat_wxyz: np.ndarray) -> float:
    """Heading of a rotation's x axis about world z: ``atan2(R[1,0], R[0,0])`` of quaternion ``[w, x, y, z]``."""
    w, x, y, z = np.asarray(quat_wxyz, np.float64)
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
