"""Run logs: JSON lines (always), TensorBoard (when installed), a progress bar on the terminal."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


class RunLogger:
    """Writes one JSON object per logged step to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    Only the main process creates a logger that writes; other ranks get ``enabled=False``.
    """

    def __init__(self, out_dir: Path, enabled: bool = True, tensorboard: bool = True, resume: bool = False):
        self.enabled = enabled
        self.tb = None
        self.file = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / METRICS_FILE
        self.file = open(self.path, "a" if resume else "w", buffering=1)  # noqa: SIM115 - closed in close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the tensorboard package is optional (extra `tensorboard`)
                self.tb = None
            else:
                self.tb = SummaryWriter(str(out_dir / "tensorboard"))

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Appends ``values`` (plain floats/ints/strings) for ``step``."""
        if not self.enabled or self.file is None:
            return
        record = {"step": step, "time": round(time.time(), 3), **values}
        self.file.write(json.dumps(record, allow_nan=True) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def event(self, message: str) -> None:
        """A human-readable line on stderr (main process only)."""
        if self.enabled:
            print(f"[openjepa] {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Flushes and closes the files."""
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Reads a ``metrics.jsonl`` file; for a resumed run the last record of each step wins."""
    by_step: dict[int, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step.setdefault(rec["step"], {}).update(rec)
    return [by_step[s] for s in sorted(by_step)]
