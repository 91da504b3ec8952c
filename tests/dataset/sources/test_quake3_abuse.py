"""Hostile .pk3 archives: zip bombs, lying size headers and too much to read fail with a SceneError and
without the memory they ask for."""

from __future__ import annotations

import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from dataset.core.scene import SceneError
from dataset.sources import quake3
from dataset.sources.quake3 import load_quake3
from dataset.sources.quake3.archives import _Archives

MiB = 1 << 20


@pytest.fixture(autouse=True)
def no_installed_data(monkeypatch, tmp_path):
    """Only the archives a test writes take part."""
    monkeypatch.setattr(quake3.archives, "OPENARENA_DIRS", (str(tmp_path / "no-such-dir"),))
    monkeypatch.delenv(quake3.OPENARENA_ENV, raising=False)


def zero_member(path: Path, name: str, size: int, level: int = 6) -> Path:
    """A .pk3 with one zero-filled deflated member of ``size`` bytes, streamed (never held in memory)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        with zf.open(name, "w", force_zip64=size >= 1 << 31) as f:
            chunk = bytes(MiB)
            for _ in range(size // MiB):
                f.write(chunk)
    return path


def declare_size(path: Path, size: int) -> None:
    """Overwrite the central directory's uncompressed size of the (only) member: a lying header."""
    data = bytearray(path.read_bytes())
    entry = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, entry + 24, size)
    path.write_bytes(bytes(data))


def peak_and_error(fn) -> tuple[int, str]:
    """(peak Python memory in bytes, SceneError message) of ``fn``, which must raise SceneError."""
    tracemalloc.start()
    try:
        with pytest.raises(SceneError) as err:
            fn()
        return tracemalloc.get_traced_memory()[1], str(err.value)
    finally:
        tracemalloc.stop()


def test_member_over_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(quake3.archives, "MAX_MEMBER_BYTES", 16 * MiB)
    pk3 = zero_member(tmp_path / "bomb.pk3", "maps/bomb.bsp", 64 * MiB)
    peak, message = peak_and_error(lambda: load_quake3(f"{pk3}:bomb"))
    assert f"maps/bomb.bsp in {pk3} declares {64 * MiB} bytes, over the limit of 16 MiB per archive member" in message
    assert peak < 4 * MiB


def test_declared_size_over_the_default_limit_is_refused(tmp_path):
    pk3 = zero_member(tmp_path / "huge.pk3", "maps/huge.bsp", MiB)
    declare_size(pk3, 3 << 30)  # 3 GiB claimed, 1 MiB there
    with pytest.raises(SceneError, match=r"maps/huge\.bsp in .*huge\.pk3 declares 3221225472 bytes, "
                                         r"over the limit of 256 MiB per archive member.*remove it"):
        load_quake3(f"{pk3}:huge")


def test_header_that_understates_the_size_inflates_no_more_than_it_claims(tmp_path):
    pk3 = zero_member(tmp_path / "liar.pk3", "maps/liar.bsp", 64 * MiB)
    declare_size(pk3, 1000)  # within every limit, but 64 MiB inflate out of the data
    peak, message = peak_and_error(lambda: load_quake3(f"{pk3}:liar"))
    assert "cannot read maps/liar.bsp from" in message and "CRC" in message and "damaged" in message
    assert peak < 8 * MiB


def test_compression_quake3_cannot_read_is_refused(tmp_path):
    pk3 = tmp_path / "bz.pk3"
    with zipfile.ZipFile(pk3, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("maps/bz.bsp", bytes(1000))
    with pytest.raises(SceneError, match=r"maps/bz\.bsp from .*bz\.pk3: compression method 12 .*stored or deflated"):
        load_quake3(f"{pk3}:bz")


def test_one_load_reads_at_most_the_total_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(quake3.archives, "MAX_LOAD_BYTES", 5 * MiB)
    pk3 = tmp_path / "many.pk3"
    with zipfile.ZipFile(pk3, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"textures/t{i}.tga", bytes(2 * MiB))
    with _Archives([str(pk3)]) as archives:
        assert len(archives.read(archives.find("textures/t0.tga"))) == 2 * MiB
        assert len(archives.read(archives.find("textures/t1.tga"))) == 2 * MiB
        with pytest.raises(SceneError, match=r"cannot read textures/t2\.tga from .*many\.pk3: with its 2097152 "
                                             r"bytes this level load would read more than the limit of 5 MiB"):
            archives.read(archives.find("textures/t2.tga"))
    with _Archives([str(pk3)]) as fresh:  # the budget is per load
        assert len(fresh.read(fresh.find("textures/t2.tga"))) == 2 * MiB


@pytest.mark.slow
def test_gigabyte_zip_bomb_at_the_default_limits(tmp_path):
    """The report's case: a few-MB .pk3 whose map inflates to 1 GiB."""
    pk3 = zero_member(tmp_path / "gig.pk3", "maps/gig.bsp", 1 << 30, level=1)
    assert pk3.stat().st_size < 8 * MiB
    peak, message = peak_and_error(lambda: load_quake3(f"{pk3}:gig"))
    assert "declares 1073741824 bytes, over the limit of 256 MiB" in message
    assert peak < 4 * MiB
