"""Shared test fixtures."""

from __future__ import annotations

import pytest
from scene_helpers import make_scene

from dataset.scene import Scene


@pytest.fixture
def box_room() -> Scene:
    """A closed 4 x 6 x 3 m room (x in [-2, 2], y in [-3, 3], z in [0, 3]) with a small box prop."""
    return make_scene([((-2, -3, 0), (2, 3, 3), True, (0.8, 0.8, 0.8), "room"),
                       ((1.0, 2.0, 0.0), (1.5, 2.5, 0.5), False, (0.8, 0.2, 0.2), "crate")])
