"""The one place a renderer spec (``jobspec.RendererSpec``) becomes a renderer."""

from __future__ import annotations

import tempfile
from pathlib import Path

from dataset.core.jobspec import RendererSpec, UnrealRendererSpec
from dataset.core.scene import Scene
from dataset.render.base import Renderer
from dataset.render.embedded import EmbeddedRenderer, RenderSettings


def make_renderer(spec: RendererSpec, scene: Scene | None = None, endpoint: str | None = None,
                  threads: int | None = None) -> Renderer:
    """A renderer for ``spec``: the embedded one for ``scene`` (on ``threads`` threads, default all cores), or
    an UnrealCV client of the server at ``endpoint`` (which renders its own level)."""
    if isinstance(spec, UnrealRendererSpec):
        from ue_plugin.backend import UnrealCVRenderer

        if endpoint is None:
            raise ValueError("the unreal renderer needs the host:port of an UnrealCV server")
        return UnrealCVRenderer(endpoint, timeout=spec.timeout_s)
    if scene is None:
        raise ValueError("the embedded renderer needs a scene")
    return EmbeddedRenderer(scene, RenderSettings.from_spec(spec, threads))


def launch_instance(spec: UnrealRendererSpec, resolution: tuple[int, int], gpu: int | None):
    """Start a game instance of ``spec`` (launch mode) on ``gpu``, with cube faces for ``resolution``."""
    from ue_plugin.launcher import InstanceConfig, UEInstance

    face = max(16, resolution[0] // 4)
    instance = UEInstance(InstanceConfig(binary=spec.binary, map=spec.map, gpu=gpu, resolution=(face, face),
                                         startup_timeout_s=spec.startup_timeout_s,
                                         workdir=str(Path(tempfile.gettempdir()) / "matrix-pano-ue")))
    instance.start()
    return instance
