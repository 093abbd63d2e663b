"""Training metrics a person can plot, and a progress line on stderr.

Every record goes to ``RUN_DIR/metrics.jsonl`` (one JSON object a line, with ``stage``,
``phase``, ``step`` and the values) and, per phase, to ``RUN_DIR/metrics/<stage>-<phase>.csv``
with the columns of its first record. Appending: a resumed run continues the same files.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["MetricsLog", "Progress"]


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class MetricsLog:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        (self.run_dir / "metrics").mkdir(parents=True, exist_ok=True)
        self._columns: dict[str, list[str]] = {}

    def write(self, stage: str, phase: str, record: dict[str, Any]) -> None:
        rec = {"stage": stage, "phase": phase, "time_unix": round(time.time(), 3),
               **{k: _clean(v) for k, v in record.items()}}
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if "step" not in record:
            return
        path = self.run_dir / "metrics" / f"{stage}-{phase}.csv"
        key = str(path)
        if key not in self._columns:
            if path.exists() and path.stat().st_size:
                with open(path, encoding="utf-8") as f:
                    self._columns[key] = next(csv.reader(f))
            else:
                self._columns[key] = list(rec)
                with open(path, "w", encoding="utf-8", newline="") as f:
                    csv.writer(f).writerow(self._columns[key])
        with open(path, "a", encoding="utf-8", newline="") as f:
            csv.writer(f).writerow([rec.get(c, "") for c in self._columns[key]])


class Progress:
    """``wm 120/500 [#####.....] loss 0.1234 3.2 step/s``, rewritten in place on a terminal,
    one line per update otherwise. Writes nothing when ``enabled`` is false (ranks > 0)."""

    def __init__(self, label: str, total: int, start: int = 0, *, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.label, self.total, self.start = label, total, start
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._t0 = time.monotonic()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        rate = (step - self.start) / max(time.monotonic() - self._t0, 1e-9)
        filled = int(20 * step / max(self.total, 1))
        text = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        line = (f"{self.label} {step}/{self.total} [{'#' * filled}{'.' * (20 - filled)}] "
                f"{text} {rate:.2f} step/s")
        self.stream.write(("\r" + line) if self._tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()
