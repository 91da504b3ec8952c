"""Random LPIPS weights laid out as a user has them (for tests of every metric table that reports LPIPS)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from inference import metrics as M


def write_lpips(folder: Path, trunk: str = "alex", seed: int = 0) -> Path:
    """The trunk in torchvision's layout and lpips' heads, two files in a new ``folder``."""
    torch.manual_seed(seed)
    net = M.LpipsNetwork(trunk)
    folder.mkdir()
    save_file({f"features.{k}": v for k, v in net.features.state_dict().items()}, folder / "trunk.safetensors")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(M._LPIPS_TRUNKS[trunk][2])},
               folder / "heads.pth")
    return folder
