"""Progress of a long job on stderr: done/total, failures, rate per minute and ETA."""

from __future__ import annotations

import sys
import time


class Progress:
    """A tqdm bar of finished items (clips, shards) with failures, items per minute and the time left."""

    def __init__(self, desc: str, unit: str, total: int, done: int = 0, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.unit = unit
        self.start = time.time()
        self.first = done
        self.bar = tqdm(total=total, initial=done, unit=unit, desc=desc, disable=not enabled, file=sys.stderr,
                        bar_format="{desc}: {n}/{total} " + unit + "s |{bar}|{postfix}")

    def update_to(self, done: int, failed: int, total: int | None = None) -> None:
        """Show ``done`` finished and ``failed`` given-up items of ``total`` (unchanged when None)."""
        if total is not None:
            self.bar.total = total
        self.bar.n = done
        rate = (done - self.first) / max(time.time() - self.start, 1e-6) * 60
        left = max(self.bar.total - done - failed, 0)
        eta = f"{left / rate:.1f} min" if rate > 0 else "?"
        self.bar.set_postfix_str(f"failed {failed}, {rate:.1f} {self.unit}s/min, ETA {eta}")

    def close(self) -> None:
        self.bar.close()
