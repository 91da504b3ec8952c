"""Trajectory sampling: walkable surfaces, route graphs, camera paths and collision checks (see its issue)."""
