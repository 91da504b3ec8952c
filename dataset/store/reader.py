"""Reading a built dataset: committed shards only, clips with decoded frames, depth and poses, and
``verify`` (every committed shard checked against its marker's size and checksum, the schema and its rows).

``DIR`` may be a local folder or any fsspec URL (``s3://bucket/prefix``; see ``store.fs``). One-liners for other
tools (committed shards are ``shards/part-*.parquet`` with a ``.json`` beside them; a finished build leaves no
other ``part-*.parquet`` files; ``committed_files(DIR)`` lists exactly the committed ones, for a dataset that a
build may be writing right now)::

    pandas:   pd.read_parquet(committed_files(DIR), columns=["clip_id", "status"])
    DuckDB:   duckdb.sql("SELECT status, count(*) FROM 'DIR/shards/part-*.parquet' GROUP BY status")
              (on S3: DuckDB's httpfs with CREATE SECRET, or con.register_filesystem(s3fs.S3FileSystem()))
    Ray Data: ray.data.read_parquet(committed_files(DIR))
    HF:       datasets.load_dataset("parquet", data_files=committed_files(DIR), split="train")
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from dataset.core.codecs import decode_depth, decode_mp4
from dataset.core.conventions import rows_to_poses
from dataset.store.fs import Location, location, parquet_file, read_parquet
from dataset.store.shards import SCHEMA, scan_shards

LIGHT_COLUMNS = [f.name for f in SCHEMA if f.name not in ("rgb_mp4", "depth")]
"""Every column except the video and depth payloads."""


@dataclass
class Clip:
    """One clip row; payloads are decoded on demand."""

    row: dict

    @property
    def clip_id(self) -> str:
        return self.row["clip_id"]

    @property
    def c2w(self) -> np.ndarray:
        """(frames, 4, 4) camera-to-world poses."""
        return rows_to_poses(self.row["c2w"])

    def frames(self) -> np.ndarray:
        """(frames, H, W, 3) uint8 decoded equirect frames."""
        return decode_mp4(self.row["rgb_mp4"])

    def depth(self) -> np.ndarray:
        """(frames, H, W) float32 range depth in metres (0 = no hit)."""
        return decode_depth(self.row["depth"], (self.row["num_frames"], self.row["height"], self.row["width"]))


class PanoDataset:
    """A dataset folder written by ``matrix-pano build``, local or on a store (only committed shards are
    visible)."""

    def __init__(self, path: str | Location) -> None:
        self.path = location(path)
        scan = scan_shards(self.path)
        if not scan.committed and not scan.damaged and not (self.path / "shards").is_dir():
            raise FileNotFoundError(f"{self.path} is not a Matrix-Pano dataset (no shards/ folder)")
        if scan.damaged:
            name, problem = scan.damaged[0]
            warnings.warn(f"{self.path}: {len(scan.damaged)} damaged shards are skipped ({name}: {problem}); rerun "
                          f"the build on this folder to repair them, `matrix-pano verify` lists them", stacklevel=2)
        self.shards = [p for p, _ in scan.committed]
        self.markers = [m for _, m in scan.committed]
        """The commit marker of each shard (clip ids, rows, bytes, checksums)."""

    def table(self, columns: list[str] | None = None, status: str | None = None,
              scene: str | None = None) -> pa.Table:
        """All committed rows as one Arrow table (default: without the heavy payload columns)."""
        cols = columns or LIGHT_COLUMNS
        if not self.shards:
            return SCHEMA.empty_table().select(cols)
        table = pa.concat_tables([read_parquet(p, columns=cols) for p in self.shards])
        return filter_rows(table, status, scene)

    def clips(self, status: str | None = None, scene: str | None = None) -> Iterator[Clip]:
        """Clips one row group at a time, optionally only one status or scene (string or scene id)."""
        for path in self.shards:
            f = parquet_file(path)
            for g in range(f.num_row_groups):
                for row in filter_rows(f.read_row_group(g), status, scene).to_pylist():
                    yield Clip(row)

    def __len__(self) -> int:
        return sum(m["rows"] for m in self.markers)


def committed_files(path: str | Location) -> list[str]:
    """The committed shard files of a dataset as strings (local paths or URLs), for tools that take file lists
    (pandas, Ray Data, HF ``datasets``, DuckDB's ``read_parquet([...])``)."""
    return [str(p) for p, _ in scan_shards(location(path)).committed]


def filter_rows(table: pa.Table, status: str | None, scene: str | None) -> pa.Table:
    """Rows with the given status and scene (scene string or scene id); None keeps all."""
    import pyarrow.compute as pc

    if status is not None:
        table = table.filter(pc.equal(table["status"], status))
    if scene is not None:
        table = table.filter(pc.or_(pc.equal(table["scene"], scene), pc.equal(table["scene_id"], scene)))
    return table


def verify_dataset(path: str | Location, decode: bool = True) -> list[str]:
    """Problems found in the shards (empty list = all good), each naming its shard.

    Every marker is checked (shape, own checksum, the shard's size and SHA-256), every intact shard is read
    (schema, row count, clip ids against its marker, poses, statuses, and with ``decode`` its video and
    depth), and clips held by two shards are reported. Files without a marker are not committed and not
    checked (debris of an interrupted writer; the next build removes them). A shard that fails to read is
    one problem, never an exception."""
    path = location(path)
    scan = scan_shards(path, checksums=True)
    problems = [f"{name}: {problem}" for name, problem in scan.damaged]
    if not scan.committed and not problems:
        return [f"{path}: no committed shards (shards/part-*.parquet with a .json marker)"]
    for parquet, marker in scan.committed:
        try:
            problems += _check_shard(parquet, marker, decode)
        except Exception as exc:  # any decode error of a damaged file is that shard's problem
            problems.append(f"{parquet.name}: unreadable parquet ({type(exc).__name__}: {exc})")
    return problems


def _check_shard(parquet: Location, marker: dict, decode: bool) -> list[str]:
    where = parquet.name
    f = parquet_file(parquet)
    if not f.schema_arrow.equals(SCHEMA):
        return [f"{where}: schema differs from the dataset schema"]
    out = []
    ids = f.read(columns=["clip_id"]).column("clip_id").to_pylist()
    if ids != marker["clip_ids"]:
        out.append(f"{where}: rows do not match its marker's clip ids")
    statuses = f.read(columns=["status"]).column("status").to_pylist()
    if (statuses.count("accepted"), statuses.count("rejected")) != (marker["accepted"], marker["rejected"]):
        out.append(f"{where}: accepted/rejected counts differ from its marker's")
    for g in range(f.num_row_groups):
        for row in f.read_row_group(g).to_pylist():
            out += _check_row(row, where, decode)
    return out


def _check_row(row: dict, where: str, decode: bool) -> list[str]:
    n, h, w = row["num_frames"], row["height"], row["width"]
    cid = f"{where}: clip {row['clip_id']}"
    out = []
    if len(row["c2w"]) != n or any(len(m) != 16 for m in row["c2w"]):
        out.append(f"{cid}: {len(row['c2w'])} poses for {n} frames (or a pose is not 16 numbers)")
    if row["status"] not in ("accepted", "rejected"):
        out.append(f"{cid}: status {row['status']!r} is not accepted/rejected")
    if not decode:
        return out
    try:
        frames = decode_mp4(row["rgb_mp4"])
        if frames.shape != (n, h, w, 3):
            out.append(f"{cid}: video decodes to {frames.shape}, expected {(n, h, w, 3)}")
    except Exception as exc:
        out.append(f"{cid}: video does not decode ({exc})")
    try:
        depth = decode_depth(row["depth"], (n, h, w))
        if not np.isfinite(depth).all() or (depth < 0).any():
            out.append(f"{cid}: depth has negative or non-finite values")
    except Exception as exc:
        out.append(f"{cid}: depth does not decode to {(n, h, w)} float16 ({exc})")
    return out
