"""Quake 3 shader scripts (``scripts/*.shader``): what the loader needs of each shader."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache

from dataset.core.scene import SceneError
from dataset.sources.quake3.archives import _ZIP_ERRORS, _member_names, read_member

ALPHA_FUNCS = ("GT0", "LT128", "GE128")
"""The ``alphaFunc`` values of Quake 3 shader stages."""
_SHADER_TOKEN = re.compile(r'//[^\n]*|/\*.*?\*/|"([^"]*)"|([{}])|([^\s{}"]+)', re.DOTALL)


@dataclass(frozen=True)
class ShaderInfo:
    """What the loader needs from a shader script."""

    image: str | None
    """Image of its first colour stage: the first ``map``/``clampMap``/``animMap`` (first frame) that is
    neither ``$lightmap``/``$whiteimage`` nor an environment map, else any stage image, else ``qer_editorimage``."""
    blended: bool
    """All its stages (besides ``$lightmap``) blend over what is behind (``blendFunc``): see-through."""
    alpha_func: str | None = None
    """``alphaFunc`` of the stage that gives ``image`` (``GT0``, ``LT128`` or ``GE128``; None when it has none):
    the alpha test that cuts grates, fences and foliage out of their texture."""


@lru_cache(maxsize=8)
def _shader_table(stamps: tuple[tuple[str, int, int], ...]) -> dict[str, ShaderInfo]:
    """Shader name (lower case) -> ShaderInfo over all scripts/*.shader of the archives, later ones overriding."""
    table: dict[str, ShaderInfo] = {}
    for stamp in stamps:
        scripts = sorted(n for n in _member_names(stamp)
                         if n.lower().startswith("scripts/") and n.lower().endswith(".shader"))
        if not scripts:
            continue
        try:
            with zipfile.ZipFile(stamp[0]) as zf:
                for name in scripts:
                    table.update(parse_shader_script(read_member(zf, stamp[0], name).decode("latin-1")))
        except _ZIP_ERRORS as exc:
            raise SceneError(f"cannot read the shader scripts of {stamp[0]} ({exc}): the archive is damaged, "
                             f"replace it") from exc
    return table


def parse_shader_script(text: str) -> dict[str, ShaderInfo]:
    """Shader name (lower case) -> ShaderInfo for each shader of a Quake 3 shader script's text."""
    table: dict[str, ShaderInfo] = {}
    depth = 0
    name = editor = None
    stages: list[list[str]] = []
    tokens = [m.group(1) if m.group(1) is not None else (m.group(2) or m.group(3))
              for m in _SHADER_TOKEN.finditer(text) if not m.group(0).startswith(("//", "/*"))]
    for i, tok in enumerate(tokens):
        if tok == "{":
            depth += 1
            if depth == 2:
                stages.append([])
        elif tok == "}":
            depth = max(depth - 1, 0)
            if depth == 0 and name is not None:
                table[name.lower()] = _shader_info(stages, editor)
                name, editor, stages = None, None, []
        elif depth == 0:
            name, editor, stages = tok, None, []
        elif depth == 1 and tok.lower() == "qer_editorimage" and i + 1 < len(tokens):
            editor = tokens[i + 1]
        elif depth >= 2 and stages:
            stages[-1].append(tok)
    return table


def _shader_info(stages: list[list[str]], editor: str | None) -> ShaderInfo:
    image = fallback = image_func = fallback_func = None
    blends = []
    for stage in stages:
        low = " ".join(stage).lower().split()
        if "$lightmap" in low:
            continue
        blend = low.index("blendfunc") if "blendfunc" in low else -1
        blends.append(blend >= 0 and low[blend + 1:blend + 3] != ["gl_one", "gl_zero"])
        stage_image = None
        for k, t in enumerate(low):
            if t in ("map", "clampmap") and k + 1 < len(stage):
                stage_image = stage[k + 1]
            elif t == "animmap" and k + 2 < len(stage):
                stage_image = stage[k + 2]
            if stage_image:
                break
        if not stage_image or stage_image.startswith("$") or image:
            continue
        func = low[low.index("alphafunc") + 1].upper() if "alphafunc" in low[:-1] else None
        func = func if func in ALPHA_FUNCS else None
        if any(low[k:k + 2] == ["tcgen", "environment"] for k in range(len(low))):
            if not fallback:
                fallback, fallback_func = stage_image, func
        else:
            image, image_func = stage_image, func
    return ShaderInfo(image or fallback or editor, bool(blends) and all(blends),
                      image_func if image else fallback_func if fallback else None)
