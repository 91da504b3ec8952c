"""Shader textures: image resolution by shader name then script, decoding, and the per-process cache.

A shader whose image stage has an ``alphaFunc`` and whose image has an alpha channel becomes a masked
material (``Material.alpha_mode`` ``"mask"``) with that image's alpha plane, tested as the game does:
``GT0`` keeps alpha > 0, ``GE128`` alpha >= 0.5 and ``LT128`` alpha < 0.5. An ``alphaFunc`` on an image
without alpha (a JPEG) leaves the material opaque.
"""

from __future__ import annotations

import io
import os
import struct
from collections import OrderedDict
from dataclasses import replace

import numpy as np
from PIL import Image

from dataset.core.scene import Material
from dataset.sources.quake3.archives import _Archives
from dataset.sources.quake3.shaders import ShaderInfo

MAX_TEXTURE_SIZE = 512
UNTEXTURED_COLOR = (0.5, 0.5, 0.5)
IMAGE_FORMATS = {".tga": "TGA", ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
"""Image extensions in Quake 3's lookup order and the Pillow decoder for each."""
ALPHA_TESTS = {"GT0": (0.5 / 255, False), "GE128": (0.5, False), "LT128": (0.5, True)}
"""``alphaFunc`` -> (``Material.alpha_cutoff``, ``Material.alpha_invert``); GT0's cutoff is half an 8-bit step."""
_TEXTURE_CACHE: OrderedDict[tuple, tuple[np.ndarray, np.ndarray | None] | None] = OrderedDict()
_TEXTURE_CACHE_BYTES = 256 << 20


def _load_materials(archives: _Archives, shaders: dict[str, ShaderInfo], shader_names: list[str]
                    ) -> tuple[list[Material], list[np.ndarray], list[np.ndarray], dict]:
    """One Material per shader, textured when its image resolves, masked when its image stage is alpha-tested;
    the textures, the alpha planes and statistics for the provenance."""
    materials, textures, alphas = [], [], []
    texture_index: dict[tuple[str, str], int] = {}
    alpha_index: dict[tuple[str, str], int] = {}
    unresolved = []
    for name in shader_names:
        member = _resolve_image(archives, shaders, name)
        decoded = _texture(archives, member) if member else None
        if decoded is None:
            unresolved.append(name)
            materials.append(Material(name, UNTEXTURED_COLOR, -1))
            continue
        rgb, alpha = decoded
        if member not in texture_index:
            texture_index[member] = len(textures)
            textures.append(rgb)
        material = Material(name, (1.0, 1.0, 1.0), texture_index[member])
        info = shaders.get(name.lower())
        if info is not None and info.alpha_func in ALPHA_TESTS and alpha is not None:
            if member not in alpha_index:
                alpha_index[member] = len(alphas)
                alphas.append(alpha)
            cutoff, invert = ALPHA_TESTS[info.alpha_func]
            material = replace(material, alpha_mode="mask", alpha_cutoff=cutoff, alpha_invert=invert,
                               alpha=alpha_index[member])
        materials.append(material)
    stats = {"shaders_resolved": len(shader_names) - len(unresolved), "shaders_unresolved": len(unresolved),
             "unresolved_shaders": sorted(unresolved),
             "shaders_alpha_tested": sum(m.alpha_mode == "mask" for m in materials)}
    return materials, textures, alphas, stats


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


def _texture(archives: _Archives, member: tuple[str, str]) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Decoded (RGB, alpha or None) texture (read-only, longer side at most MAX_TEXTURE_SIZE), cached per archive
    file + name."""
    key = (archives.stamp(member[0]), member[1])
    if key in _TEXTURE_CACHE:
        _TEXTURE_CACHE.move_to_end(key)
        return _TEXTURE_CACHE[key]
    image = _decode_image(archives.read(member), member[1])
    _TEXTURE_CACHE[key] = image
    while sum(sum(a.nbytes for a in t if a is not None) for t in _TEXTURE_CACHE.values() if t is not None
              ) > _TEXTURE_CACHE_BYTES:
        _TEXTURE_CACHE.popitem(last=False)
    return image


def _decode_image(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """TGA/JPEG/PNG bytes to RGB uint8 (h, w, 3) and, when the image has an alpha channel, its alpha (h, w),
    downscaled to MAX_TEXTURE_SIZE; None if undecodable."""
    fmt = IMAGE_FORMATS.get(os.path.splitext(name)[1].lower())
    try:
        with Image.open(io.BytesIO(data), formats=[fmt] if fmt else None) as im:
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            decoded = im.convert("RGBA" if has_alpha else "RGB")
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError):
        return None
    if max(decoded.size) > MAX_TEXTURE_SIZE:
        decoded.thumbnail((MAX_TEXTURE_SIZE, MAX_TEXTURE_SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(decoded, np.uint8)
    rgb = np.ascontiguousarray(pixels[..., :3])
    alpha = np.ascontiguousarray(pixels[..., 3]) if has_alpha else None
    for plane in (rgb, alpha):
        if plane is not None:
            plane.setflags(write=False)
    return rgb, alpha
