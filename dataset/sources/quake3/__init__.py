"""Quake 3 levels (IBSP version 46) from OpenArena ``.pk3`` archives, as Scenes.

Source strings:

- ``openarena:MAP``: the map from the installed OpenArena archives (``apt-get install openarena-data``);
- ``PATH.pk3:MAP``: the map from that archive (its textures first, then the installed ones);
- ``PATH.bsp``: a loose BSP file, textured from the installed archives;

each optionally followed by ``?subdivisions=N``, the Bézier patch tessellation level (default 8).

The BSP geometry is parsed with numpy structured dtypes; curved patches are tessellated as
biquadratic Bézier patches; surfaces that hide nothing (sky, tool brushes, fog, non-solid see-through
effects such as light beams and flames) are dropped, so sky rays miss (depth 0). World = Quake units
(inches) * 0.0254, Z up, as in DESIGN.md. Quake 3 faces are clockwise seen from the front; the Scene
gets them counter-clockwise. Light maps and vertex colours carry the baked lighting, brightened by
Quake 3's over-bright shift as the game shows it. Textures are resolved by shader name, then through
the ``scripts/*.shader`` files, and decoded once per process (cached per archive file and name).
Shaders whose image stage has an ``alphaFunc`` (grates, fences, foliage) become masked, see-through materials
with their image's alpha (``textures``); the level's geometry stays solid for walking and collisions.

Modules: ``loader`` (source strings, ``load_quake3``), ``archives`` (OpenArena discovery, ``.pk3`` access),
``bsp`` (lumps, entities, visible surfaces, triangles and patch tessellation), ``shaders`` (shader
scripts), ``textures`` (image resolution, decoding, cache), ``lighting`` (over-bright shift) and
``level`` (the Scene of a parsed level). Monkeypatch configuration where it is read:
``quake3.archives.OPENARENA_DIRS``.
"""

from __future__ import annotations

from dataset.sources.quake3.archives import OPENARENA_DIRS, OPENARENA_ENV, find_openarena_maps
from dataset.sources.quake3.level import LICENCE, PLAYER_MINS_Z, SPAWN_CLASSES, STEP_SIZE
from dataset.sources.quake3.lighting import OVERBRIGHT_SHIFT, color_shift
from dataset.sources.quake3.loader import DEFAULT_SUBDIVISIONS, load_quake3
from dataset.sources.quake3.shaders import ShaderInfo, parse_shader_script
from dataset.sources.quake3.textures import MAX_TEXTURE_SIZE, UNTEXTURED_COLOR

__all__ = [
    "DEFAULT_SUBDIVISIONS", "LICENCE", "MAX_TEXTURE_SIZE", "OPENARENA_DIRS", "OPENARENA_ENV", "OVERBRIGHT_SHIFT",
    "PLAYER_MINS_Z", "SPAWN_CLASSES", "STEP_SIZE", "UNTEXTURED_COLOR", "ShaderInfo", "color_shift",
    "find_openarena_maps", "load_quake3", "parse_shader_script",
]
