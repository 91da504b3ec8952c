"""Shader textures: image resolution by shader name then script, decoding, and the per-process cache."""

from __future__ import annotations

import io
import os
import struct
from collections import OrderedDict

import numpy as np
from PIL import Image

from dataset.core.scene import Material
from dataset.sources.quake3.archives import _Archives
from dataset.sources.quake3.shaders import ShaderInfo

MAX_TEXTURE_SIZE = 512
UNTEXTURED_COLOR = (0.5, 0.5, 0.5)
IMAGE_FORMATS = {".tga": "TGA", ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
"""Image extensions in Quake 3's lookup order and the Pillow decoder for each."""
_TEXTURE_CACHE: OrderedDict[tuple, np.ndarray | None] = OrderedDict()
_TEXTURE_CACHE_BYTES = 256 << 20


def _load_materials(archives: _Archives, shaders: dict[str, ShaderInfo], shader_names: list[str]
                    ) -> tuple[list[Material], list[np.ndarray], dict]:
    """One Material per shader, textured when its image resolves; statistics for the provenance."""
    materials, textures = [], []
    texture_index: dict[tuple[str, str], int] = {}
    unresolved = []
    for name in shader_names:
        member = _resolve_image(archives, shaders, name)
        image = _texture(archives, member) if member else None
        if image is None:
            unresolved.append(name)
            materials.append(Material(name, UNTEXTURED_COLOR, -1))
            continue
        if member not in texture_index:
            texture_index[member] = len(textures)
            textures.append(image)
        materials.append(Material(name, (1.0, 1.0, 1.0), texture_index[member]))
    stats = {"shaders_resolved": len(shader_names) - len(unresolved), "shaders_unresolved": len(unresolved),
             "unresolved_shaders": sorted(unresolved)}
    return materials, textures, stats


def _resolve_image(archives: _Archives, shaders: dict[str, ShaderInfo], shader: str) -> tuple[str, str] | None:
    """(archive, member) of the image a shader draws: a same-named image, else its script's image."""
    info = shaders.get(shader.lower())
    for candidate in (shader, info.image if info else None):
        if not candidate:
            continue
        stem = candidate.replace("\\", "/")
        ext = os.path.splitext(stem)[1].lower()
        if ext in IMAGE_FORMATS:
            stem = stem[:-len(ext)]
        for suffix in IMAGE_FORMATS:
            member = archives.find(stem + suffix)
            if member:
                return member
    return None


def _texture(archives: _Archives, member: tuple[str, str]) -> np.ndarray | None:
    """Decoded RGB texture (read-only, longer side at most MAX_TEXTURE_SIZE), cached per archive file + name."""
    key = (archives.stamp(member[0]), member[1])
    if key in _TEXTURE_CACHE:
        _TEXTURE_CACHE.move_to_end(key)
        return _TEXTURE_CACHE[key]
    image = _decode_image(archives.read(member), member[1])
    _TEXTURE_CACHE[key] = image
    while sum(t.nbytes for t in _TEXTURE_CACHE.values() if t is not None) > _TEXTURE_CACHE_BYTES:
        _TEXTURE_CACHE.popitem(last=False)
    return image


def _decode_image(data: bytes, name: str) -> np.ndarray | None:
    """TGA/JPEG/PNG bytes to RGB uint8 (alpha ignored), downscaled to MAX_TEXTURE_SIZE; None if undecodable."""
    fmt = IMAGE_FORMATS.get(os.path.splitext(name)[1].lower())
    try:
        with Image.open(io.BytesIO(data), formats=[fmt] if fmt else None) as im:
            rgb = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError):
        return None
    if max(rgb.size) > MAX_TEXTURE_SIZE:
        rgb.thumbnail((MAX_TEXTURE_SIZE, MAX_TEXTURE_SIZE), Image.Resampling.LANCZOS)
    image = np.array(rgb, np.uint8)
    image.setflags(write=False)
    return image
