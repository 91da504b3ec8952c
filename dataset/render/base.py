"""The renderer protocol every backend (embedded CPU, Unreal through UnrealCV) follows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Frames:
    """A batch of rendered equirect (or perspective) frames of one scene."""

    rgb: np.ndarray
    """(N, H, W, 3) uint8 sRGB."""
    depth: np.ndarray
    """(N, H, W) float32 range in metres along each pixel's ray, 0 = no surface."""
    instance: np.ndarray | None = None
    """(N, H, W) int32 index into ``Scene.objects`` (-1 = no surface), when the backend knows it."""

    def __len__(self) -> int:
        return int(self.rgb.shape[0])


@runtime_checkable
class Renderer(Protocol):
    """Renders panoramas of the one scene it was created for."""

    kind: str
    """Backend name recorded in provenance (``embedded``, ``unreal``)."""
    version: str
    """Backend version recorded in provenance."""

    def render(self, c2w: np.ndarray, width: int) -> Frames:
        """Render equirect frames (W = width, H = width / 2) for camera-to-world poses (N, 4, 4)."""
        ...

    def close(self) -> None:
        """Release the backend's resources (processes, sockets, memory)."""
        ...
