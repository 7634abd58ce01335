"""Bar-level examples with labels and measured attributes, stored as a pickle-free .npz."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drummachine.core.attributes import ATTRIBUTES
from drummachine.core.errors import DrumMachineError

SCHEMA = 1
BAR_FIELDS = ("start", "steps", "file", "index", "fill") + ATTRIBUTES
FILE_FIELDS = ("path", "style", "genre", "bpm", "beat_type", "drummer", "split", "meter")


def genre(style: str) -> str:
    """The top-level style of a Groove MIDI Dataset style label (``funk/groove1`` -> ``funk``)."""
    return style.split("/")[0]


@dataclass(frozen=True)
class Dataset:
    """All bars of a corpus: ``hvo`` holds every step; bars and files index into it."""

    hvo: np.ndarray  # (total_steps, 3, 9) float32: hits, velocities, offsets
    bars: dict[str, np.ndarray]  # BAR_FIELDS, one entry per bar
    files: dict[str, np.ndarray]  # FILE_FIELDS, one entry per file

    @property
    def n_bars(self) -> int:
        return int(self.bars["start"].shape[0])

    def bar_file(self, field: str) -> np.ndarray:
        """A file field broadcast to every bar."""
        return self.files[field][self.bars["file"]]

    def bar_hvo(self, indices: np.ndarray, steps: int = 16) -> np.ndarray:
        """(n, steps, 3, 9) HVO of the given bars (all must have ``steps`` steps)."""
        starts = self.bars["start"][indices]
        return self.hvo[starts[:, None] + np.arange(steps)[None, :]]

    def save(self, path: str | Path) -> None:
        arrays = {"schema": np.array(SCHEMA), "hvo": self.hvo}
        arrays.update({f"bar_{k}": v for k, v in self.bars.items()})
        arrays.update({f"file_{k}": v for k, v in self.files.items()})
        np.savez_compressed(path, **arrays)

    @staticmethod
    def load(path: str | Path) -> "Dataset":
        """Load a dataset built by ``drummachine dataset build`` (never unpickles)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["schema"]) != SCHEMA:
                    raise DrumMachineError(str(path), f"dataset schema {int(z['schema'])}; this version reads {SCHEMA}")
                bars = {k: z[f"bar_{k}"] for k in BAR_FIELDS}
                files = {k: z[f"file_{k}"] for k in FILE_FIELDS}
                return Dataset(z["hvo"], bars, files)
        except DrumMachineError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise DrumMachineError(str(path), f"not a drummachine dataset ({exc.__class__.__name__}: {exc})") from None
