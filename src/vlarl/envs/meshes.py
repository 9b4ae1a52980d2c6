"""Simplified drawing of MuJoCo scenes for faster software-GL rendering; physics untouched.

Route: the physics ``MjModel`` is never modified. A renderer draws each mesh from a display list that
``mjr_uploadMesh`` builds from a model's ``mesh_vert``/``mesh_face``/``mesh_normal``; this module builds a
small mesh-only "carrier" model whose mesh ``i`` is a simplified copy of the physics model's mesh ``i``, in
the same mesh frame, and re-uploads those lists into the renderer's GL context. The scene (poses, colours,
sites, and whatever MetaWorld edits in the model at reset: ``body_pos``, ``site_pos``, ...) is still built by
``mjv_updateScene`` from the physics model and its ``MjData``, so there is no second state to keep in sync,
and physics is identical by construction: the simulator never sees the simplified data.

Why not the other routes: editing meshes in the physics model (``MjSpec`` + recompile) re-centres each
changed mesh at its own centre of mass, which moves the geoms' frames and changes model arrays; and a
second, simplified render model would need MetaWorld's per-reset model edits copied every frame.
Since only the drawing changes, meshes that also collide (the Sawyer's gripper base and wrist link) are
drawn simplified too; their collision shapes stay the full meshes.

Meshes: each mesh above ``MIN_FACES`` faces is simplified with ``fast_simplification`` (quadric edge
collapse) to the first fraction in ``KEEP`` of its faces whose surface stays within ``TOLERANCE`` of the
full one (95th percentile of the distance, both ways, over ``SAMPLES`` surface points); a mesh with none
is drawn in full. MetaWorld's meshes are open CAD patches, and collapsing them can eat whole surfaces
(the Sawyer's pedestal vanishes, its head loses parts): that check is what keeps them. Each vertex takes
the smooth normal of the nearest full-mesh vertex. Results are cached per mesh content as ``.npz`` files
under ``$VLARL_CACHE/meshes`` (default ``~/.cache/vlarl/meshes``), written atomically (tmp file +
``os.replace``), and shared by all tasks and processes (the Sawyer's meshes are the same in every task).

Primitives: the tessellation of the built-in shapes (sphere/cylinder slices, box quads, the floor's grid)
is capped by ``PRIMITIVES`` (see ``simplified_renderer``): about 0.5-0.9 ms less per 64 px frame on
llvmpipe, mean pixel difference below 0.05 (of 255).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

MIN_FACES = 1000  # meshes with at most this many faces are drawn as they are
KEEP = (0.1, 0.15, 0.2, 0.3, 0.45)  # fractions of a mesh's faces tried in turn (at least MIN_KEEP faces)
MIN_KEEP = 500
TOLERANCE = 0.003  # m: 95% of each surface (full, simplified) must lie this close to the other
SAMPLES = 5000  # surface points per mesh for that check
CACHE_VERSION = 1  # bump when the simplification recipe changes
PRIMITIVES = (12, 8, 2, 1.0)  # at most: sphere/cylinder slices, stacks, box quads per side; floor grid >= 1 m


@dataclasses.dataclass
class SimplifiedMeshes:
    """Carrier model (``carrier.nmesh == model.nmesh``) and the mesh ids it replaces."""

    carrier: Any  # mujoco.MjModel; meshes not in ``ids`` are placeholders, never uploaded
    ids: list[int]
    faces_before: int  # faces of the replaced meshes in the physics model
    faces_after: int  # faces of their simplified copies
    simplified_now: int  # meshes simplified in this call, not read from the cache


def cache_dir() -> Path:
    """Folder of the simplified-mesh cache: ``$VLARL_CACHE/meshes``, default ``~/.cache/vlarl/meshes``."""
    return Path(os.environ.get("VLARL_CACHE") or Path.home() / ".cache" / "vlarl").expanduser() / "meshes"


def mesh_arrays(model: Any, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``[V, 3]`` float32 (m, in the mesh frame) and faces ``[F, 3]`` int32 of mesh ``i``."""
    va, vn = model.mesh_vertadr[i], model.mesh_vertnum[i]
    fa, fn = model.mesh_faceadr[i], model.mesh_facenum[i]
    return model.mesh_vert[va : va + vn].copy(), model.mesh_face[fa : fa + fn].copy()


def _surface_samples(vert: np.ndarray, face: np.ndarray, n: int, rng: np.random.Generator) -> tuple:
    """``n`` points ``[n, 3]`` spread uniformly over a mesh's surface, and the face ``[n]`` each lies on."""
    tri = vert[face]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    on = rng.choice(len(face), n, p=area / area.sum())
    r = rng.random((n, 2))
    r[r.sum(1) > 1] = 1 - r[r.sum(1) > 1]
    a, b, c = tri[on, 0], tri[on, 1], tri[on, 2]
    return a + r[:, :1] * (b - a) + r[:, 1:] * (c - a), on


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-30), 0, 1)
    return np.linalg.norm(p - a - t[:, None] * ab, axis=-1)


def _triangle_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Distance ``[N]`` from points ``p`` to triangles ``(a, b, c)``, all ``[N, 3]``."""
    ab, ac, ap = b - a, c - a, p - a
    d00, d01, d11 = (ab * ab).sum(-1), (ab * ac).sum(-1), (ac * ac).sum(-1)
    d20, d21 = (ap * ab).sum(-1), (ap * ac).sum(-1)
    den = d00 * d11 - d01 * d01
    ok = den > 1e-30  # not degenerate
    den = np.where(ok, den, 1.0)
    v, w = (d11 * d20 - d01 * d21) / den, (d00 * d21 - d01 * d20) / den
    inside = ok & (v >= 0) & (w >= 0) & (v + w <= 1)  # the point projects into the triangle
    normal = np.cross(ab, ac)
    plane = np.abs((ap * normal).sum(-1)) / np.maximum(np.linalg.norm(normal, axis=-1), 1e-30)
    edges = np.minimum(np.minimum(_segment_distance(p, a, b), _segment_distance(p, b, c)), _segment_distance(p, c, a))
    return np.where(inside, plane, edges)


def _deviation(vert: np.ndarray, face: np.ndarray, v: np.ndarray, f: np.ndarray) -> float:
    """Two-sided surface distance (m): the larger 95th percentile of full->simplified and simplified->full."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)
    worst = 0.0
    for (va, fa), (vb, fb) in (((vert, face), (v, f)), ((v, f), (vert, face))):
        points, _ = _surface_samples(va, fa, SAMPLES, rng)
        dense, on = _surface_samples(vb, fb, 4 * SAMPLES, rng)
        near = on[cKDTree(dense).query(points, k=8)[1]].ravel()  # candidate faces: those of the 8 nearest samples
        tri = vb[fb[near]]
        dist = _triangle_distance(np.repeat(points, 8, axis=0), tri[:, 0], tri[:, 1], tri[:, 2])
        worst = max(worst, float(np.percentile(dist.reshape(-1, 8).min(1), 95)))
    return worst


def _simplify(vert: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest ``KEEP`` simplification within ``TOLERANCE`` of the full mesh, else the full mesh."""
    import fast_simplification

    full = vert.astype(np.float64)
    for keep in KEEP:
        v, f = fast_simplification.simplify(full, face, target_count=max(MIN_KEEP, int(keep * len(face))))
        if len(f) < len(face) and _deviation(full, face, v, f) <= TOLERANCE:
            return v.astype(np.float32), f.astype(np.int32)
    return vert, face


def _cached_simplify(vert: np.ndarray, face: np.ndarray, folder: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """Simplified ``(vert, face)`` of one mesh, from ``folder`` when cached; the flag says it was computed now."""
    recipe = f"v{CACHE_VERSION}:{KEEP}:{MIN_KEEP}:{TOLERANCE}:{SAMPLES}:{metadata.version('fast-simplification')}"
    digest = hashlib.sha256(recipe.encode() + vert.tobytes() + face.tobytes()).hexdigest()[:32]
    path = folder / f"{digest}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["vert"], z["face"], False
    v, f = _simplify(vert, face)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, vert=v, face=f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return v, f, True


def _quat_mat(quat: np.ndarray) -> np.ndarray:
    import mujoco

    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


def _restore_frame(carrier: Any, i: int) -> None:
    """Undo the compiler's re-centring of carrier mesh ``i`` (``mesh_pos/quat``): back to the physics mesh frame."""
    rot = _quat_mat(carrier.mesh_quat[i])
    va, vn = carrier.mesh_vertadr[i], carrier.mesh_vertnum[i]
    carrier.mesh_vert[va : va + vn] = carrier.mesh_vert[va : va + vn] @ rot.T + carrier.mesh_pos[i]


def _transfer_normals(model: Any, carrier: Any, i: int) -> None:
    """Give each vertex of carrier mesh ``i`` the smooth normal of the nearest full-mesh vertex (keeps the shading)."""
    from scipy.spatial import cKDTree

    vert, face = mesh_arrays(model, i)
    na, fa, fn = model.mesh_normaladr[i], model.mesh_faceadr[i], model.mesh_facenum[i]
    vert_normal = np.zeros_like(vert)
    vert_normal[face.ravel()] = model.mesh_normal[na + model.mesh_facenormal[fa : fa + fn].ravel()]
    used = np.unique(face)  # vertices on a face (the others have no normal)
    cvert, cface = mesh_arrays(carrier, i)
    nearest = used[cKDTree(vert[used]).query(cvert)[1]]
    cna, cfa, cfn = carrier.mesh_normaladr[i], carrier.mesh_faceadr[i], carrier.mesh_facenum[i]
    carrier.mesh_normal[cna + carrier.mesh_facenormal[cfa : cfa + cfn].ravel()] = vert_normal[nearest[cface.ravel()]]


def simplify_meshes(model: Any, folder: Path | None = None) -> SimplifiedMeshes:
    """Simplified copies of ``model``'s meshes above ``MIN_FACES`` faces, in a carrier model (see module doc)."""
    import mujoco

    folder = folder or cache_dir()
    spec = mujoco.MjSpec()
    tetra_v = [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    tetra_f = [0, 2, 1, 0, 1, 3, 0, 3, 2, 1, 2, 3]
    ids, before, after, now = [], 0, 0, 0
    for i in range(model.nmesh):
        vert, face = mesh_arrays(model, i)
        mesh = spec.add_mesh(name=f"m{i}", inertia=mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL)
        v, f, computed = _cached_simplify(vert, face, folder) if len(face) > MIN_FACES else (vert, face, False)
        now += computed
        if len(f) < len(face):
            ids.append(i)
            before, after = before + len(face), after + len(f)
            mesh.uservert, mesh.userface = v.ravel().tolist(), f.ravel().tolist()
        else:
            mesh.uservert, mesh.userface = tetra_v, tetra_f
    carrier = spec.compile()
    for i in ids:
        _restore_frame(carrier, i)
        _transfer_normals(model, carrier, i)
    return SimplifiedMeshes(carrier, ids, before, after, now)


def simplified_renderer(model: Any, height: int, width: int, folder: Path | None = None) -> Any:
    """A ``mujoco.Renderer`` of ``model`` (``[height, width]`` px) that draws simplified meshes and primitives.

    Besides the meshes, the GL context's built-in shapes are tessellated more coarsely (``PRIMITIVES``:
    sphere/cylinder slices and stacks, box quads, floor-grid spacing in m); the context reads these from the
    model only while it is built, so they are set for that moment and restored: ``model`` ends unchanged.
    """
    import mujoco

    quality, planes = model.vis.quality, np.flatnonzero(model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE)
    saved = quality.numslices, quality.numstacks, quality.numquads, model.geom_size[planes, 2].copy()
    try:
        quality.numslices, quality.numstacks, quality.numquads = (
            min(old, new) for old, new in zip(saved[:3], PRIMITIVES[:3], strict=True)
        )
        model.geom_size[planes, 2] = np.maximum(saved[3], PRIMITIVES[3])
        renderer = mujoco.Renderer(model, height, width)
    finally:
        quality.numslices, quality.numstacks, quality.numquads = saved[:3]
        model.geom_size[planes, 2] = saved[3]
    meshes = simplify_meshes(model, folder)
    # mujoco.Renderer keeps its GL and mjr contexts private; mujoco is pinned (the metaworld extra).
    renderer._gl_context.make_current()
    for i in meshes.ids:
        mujoco.mjr_uploadMesh(meshes.carrier, renderer._mjr_context, i)
    return renderer
