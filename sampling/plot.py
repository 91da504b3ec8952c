"""Top-down pictures of a sampling result: one panel per floor level, with the walkable floor (green),
the excluded regions that get no paths (grey: roofs, wall tops, ledges nothing walkable reaches), the
route graph, accepted paths in colour and discarded paths dashed red; and a dataset's clips drawn the same way
over their scene's floor (``plot_clip_paths``, for ``matrix-pano stats``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sampling.sampler import SamplingResult

MAX_PANELS = 4
"""Floor levels drawn at most (the largest ones)."""
EXCLUDED_COLOUR = (0.78, 0.78, 0.78)
"""Grey of the excluded regions (RGB in [0, 1])."""


def plot_sampling(result: SamplingResult, path: str | Path, title: str = "") -> None:
    """Write a PNG with a panel per floor level (every walkable or excluded cell, graph edge and path point is
    drawn on the panel of the level nearest its height, so storeys above each other do not overlap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap

    walk, graph = result.walkable, result.graph
    levels = walk.levels()
    if not levels:  # nothing kept: one panel at the height of what was excluded, if anything
        ex = walk.excluded_z[np.isfinite(walk.excluded_z)]
        levels = [(float(ex.min()), float(ex.max())) if len(ex) else (0.0, 0.0)]
    if len(levels) > MAX_PANELS:
        area = [((walk.z >= a - 1e-4) & (walk.z <= b + 1e-4)).sum() for a, b in levels]
        levels = sorted(levels[i] for i in np.argsort(area)[-MAX_PANELS:])
    centres = np.array([(a + b) / 2 for a, b in levels])

    def level_of(z: np.ndarray) -> np.ndarray:
        return np.argmin(np.abs(np.asarray(z)[..., None] - centres), axis=-1)

    ny, nx = walk.z.shape[:2]
    h = walk.cell / 2
    extent = (walk.origin[0] - h, walk.origin[0] + (nx - 1) * walk.cell + h,
              walk.origin[1] - h, walk.origin[1] + (ny - 1) * walk.cell + h)
    aspect = ny / max(nx, 1)
    fig, axes = plt.subplots(1, len(levels), figsize=(7 * len(levels), 7 * max(0.35, min(2.0, aspect)) + 1),
                             squeeze=False)
    cell_level = level_of(np.where(np.isfinite(walk.z), walk.z, 1e9))
    excluded_level = level_of(np.where(np.isfinite(walk.excluded_z), walk.excluded_z, 1e9))
    colors = plt.get_cmap("tab10")
    floor_colours = ListedColormap([EXCLUDED_COLOUR, plt.get_cmap("Greens")(0.4)])  # 0: excluded, 1: walkable
    for k, ax in enumerate(axes[0]):
        excluded = (np.isfinite(walk.excluded_z) & (excluded_level == k)).any(axis=2)
        mask = np.isfinite(walk.z) & (cell_level == k)
        floor = np.where(mask.any(axis=2), 1.0, np.where(excluded, 0.0, np.nan))
        ax.imshow(floor, origin="lower", extent=extent, cmap=floor_colours, vmin=0, vmax=1, interpolation="nearest")
        if len(graph.edges):
            mid = graph.points[graph.edges].mean(axis=1)
            sel = level_of(mid[:, 2]) == k
            ax.add_collection(LineCollection(graph.points[graph.edges[sel]][:, :, :2], colors="0.45",
                                             linewidths=0.4, alpha=0.7))
        for d in result.discarded:
            if d.floor is not None:
                _plot_on_level(ax, d.floor, level_of, k, dict(color="red", linestyle="--", linewidth=1.2))
        for i, t in enumerate(result.trajectories):
            floor_z = t.floor[:, 2]
            p = np.column_stack([t.c2w[:, :2, 3], floor_z])
            _plot_on_level(ax, p, level_of, k, dict(color=colors(i % 10), linewidth=2))
            if level_of(floor_z[0]) == k:
                ax.plot(p[0, 0], p[0, 1], "o", color=colors(i % 10), markersize=5)
            if level_of(floor_z[-1]) == k:
                fwd = t.c2w[-1, :3, 2]
                ax.annotate("", xy=(p[-1, 0] + 0.6 * fwd[0], p[-1, 1] + 0.6 * fwd[1]), xytext=(p[-1, 0], p[-1, 1]),
                            arrowprops=dict(arrowstyle="->", color=colors(i % 10), lw=1.5))
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.set_title(f"floor at {levels[k][0]:.1f}" + (f" to {levels[k][1]:.1f}" if levels[k][1] - levels[k][0] > 0.05
                                                        else "") + " m")
    fig.suptitle((title or f"{len(result.trajectories)} paths, {len(result.discarded)} discarded (dashed red)")
                 + (f"\ngrey: {walk.num_excluded_regions} excluded regions ({walk.excluded_area():.0f} m²), no paths"
                    if walk.num_excluded_regions else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_on_level(ax, points: np.ndarray, level_of, k: int, style: dict) -> None:
    """Draw the parts of a polyline whose points lie on level ``k`` (points' z is the floor height)."""
    on = level_of(points[:, 2]) == k
    for run in np.split(np.arange(len(points)), np.flatnonzero(np.diff(on.astype(int))) + 1):
        if on[run[0]]:
            seg = points[max(run[0] - 1, 0) : run[-1] + 2]  # join up with the neighbouring level's part
            ax.plot(seg[:, 0], seg[:, 1], **style)


def plot_clip_paths(scene: str, trajs: list[tuple[str, np.ndarray]], spec: dict, target: str | Path) -> None:
    """A dataset's clips of one scene (id, c2w) drawn over the scene's walkable floor as the build's sampling
    settings (``spec``: the job spec as recorded in the manifest) find it (``matrix-pano stats``), or on their
    own when the scene does not load here."""
    from sampling.graph import RouteGraph
    from sampling.sampler import SamplingResult, Trajectory
    from sampling.walkable import WalkableConfig, extract_walkable

    sampling = spec.get("sampling", {})
    eye = float(sampling.get("eye_height", 1.6))
    title = f"{scene}: {len(trajs)} clips (dots: starts, arrows: ends)"
    try:
        from dataset.sources import load_scene

        walk = extract_walkable(load_scene(scene), WalkableConfig(
            **{k: sampling[k] for k in ("camera_radius", "regions") if k in sampling}))
    except Exception:  # a scene that does not load here (moved file, other machine): the bare paths
        walk = None
    if walk is None:
        _plot_bare(trajs, title, target)
        return
    paths = []
    for clip_id, c2w in trajs:
        floor = c2w[:, :3, 3] - [0.0, 0.0, eye]
        z, _ = walk.floor_at(floor)
        floor[:, 2] = np.where(np.isfinite(z), z, floor[:, 2])
        steps = np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum()
        paths.append(Trajectory(clip_id, c2w, floor, float(steps)))
    empty = RouteGraph(np.zeros((0, 3)), np.zeros(0, np.int32), np.zeros((0, 2), np.int64), np.zeros(0))
    plot_sampling(SamplingResult(scene, walk, empty, paths, [], []), target, title=title)


def _plot_bare(trajs: list[tuple[str, np.ndarray]], title: str, target: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    for _, c2w in trajs:
        p = c2w[:, :3, 3]
        (line,) = ax.plot(p[:, 0], p[:, 1], "-")
        ax.plot(p[0, 0], p[0, 1], "o", markersize=4, color=line.get_color())
    ax.set_aspect("equal")
    ax.set_title(title + " (scene not loadable here: no floor)")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    fig.savefig(target, dpi=90)
    plt.close(fig)
