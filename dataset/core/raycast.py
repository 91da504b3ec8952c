"""Ray casting against a scene's triangles: Embree (fast, threaded) and a numpy reference (slow, exact).

Both return the same ``Hits``: distance along the (unit) ray, triangle index (-1 = miss) and the
barycentric coordinates (u, v) of the hit, p = (1 - u - v) a + u b + v c.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass
class Hits:
    """Result of casting N rays."""

    t: np.ndarray
    """(N,) float32 distance to the first hit (inf for misses)."""
    prim: np.ndarray
    """(N,) int32 triangle index, -1 for misses."""
    u: np.ndarray
    """(N,) float32 barycentric weight of the triangle's second vertex."""
    v: np.ndarray
    """(N,) float32 barycentric weight of the triangle's third vertex."""

    @classmethod
    def empty(cls, n: int) -> Hits:
        return cls(np.empty(n, np.float32), np.empty(n, np.int32), np.empty(n, np.float32), np.empty(n, np.float32))


def default_threads() -> int:
    """Threads for CPU work: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class EmbreeCaster:
    """Embree BVH over the triangles, built once; casts split across threads (Embree releases the GIL)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, threads: int | None = None) -> None:
        from embreex import rtcore_scene
        from embreex.mesh_construction import TriangleMesh

        self._scene = rtcore_scene.EmbreeScene()
        TriangleMesh(self._scene, np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.int32))
        self.threads = threads or default_threads()
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def map_chunks(self, fn: Callable[[slice], object], n: int) -> list:
        """Run ``fn`` over slices covering range(n), in parallel on this caster's threads."""
        parts = self.threads * 4 if n >= 65536 and self._pool else 1
        bounds = np.linspace(0, n, parts + 1).astype(int)
        chunks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        if len(chunks) <= 1 or self._pool is None:
            return [fn(c) for c in chunks]
        return list(self._pool.map(fn, chunks))

    def cast_slice(self, origins: np.ndarray, directions: np.ndarray, s: slice, out: Hits) -> None:
        """Cast rays ``s`` of the arrays into the same slice of ``out`` on the calling thread."""
        r = self._scene.run(origins[s], directions[s], output=1)
        prim = r["primID"]
        out.t[s] = np.where(prim >= 0, r["tfar"], np.inf)
        out.prim[s], out.u[s], out.v[s] = prim, r["u"], r["v"]

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> Hits:
        """First hit of each ray (origins and unit directions (N, 3) float32), using every thread."""
        out = Hits.empty(len(directions))
        self.map_chunks(lambda s: self.cast_slice(origins, directions, s, out), len(directions))
        return out

    def occluded(self, origins: np.ndarray, directions: np.ndarray, max_dist: float | np.ndarray = 1e30) -> np.ndarray:
        """(N,) bool: whether anything lies along each ray within ``max_dist`` (calling thread only)."""
        # A copy: Embree writes into it, and an empty broadcast view would stay read-only.
        dists = np.array(np.broadcast_to(np.asarray(max_dist, np.float32), (len(directions),)))
        return self._scene.run(np.ascontiguousarray(origins, np.float32), np.ascontiguousarray(directions, np.float32),
                               dists=dists, query="OCCLUDED") >= 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def cast_reference(vertices: np.ndarray, faces: np.ndarray, origins: np.ndarray, directions: np.ndarray) -> Hits:
    """Brute-force Möller–Trumbore over every triangle in float64: the slow, exact reference for tests."""
    tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
    a, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    n = len(directions)
    best_t = np.full(n, np.inf)
    best_p = np.full(n, -1, np.int64)
    best_u = np.zeros(n)
    best_v = np.zeros(n)
    o_all = np.asarray(origins, np.float64)
    d_all = np.asarray(directions, np.float64)
    for start in range(0, n, 256):
        o = o_all[start:start + 256, None, :]
        d = d_all[start:start + 256, None, :]
        p = np.cross(d, e2[None])
        det = np.einsum("rfk,fk->rf", p, e1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = o - a[None]
        u = np.einsum("rfk,rfk->rf", s, p) * inv
        q = np.cross(s, e1[None])
        v = np.einsum("rfk,rfk->rf", d, q) * inv
        t = np.einsum("fk,rfk->rf", e2, q) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-7)
        t = np.where(hit, t, np.inf)
        idx = np.argmin(t, axis=1)
        rows = np.arange(len(idx))
        sl = slice(start, start + len(idx))
        best_t[sl] = t[rows, idx]
        found = np.isfinite(best_t[sl])
        best_p[sl] = np.where(found, idx, -1)
        best_u[sl] = np.where(found, u[rows, idx], 0)
        best_v[sl] = np.where(found, v[rows, idx], 0)
    return Hits(best_t.astype(np.float32), best_p.astype(np.int32), best_u.astype(np.float32),
                best_v.astype(np.float32))
