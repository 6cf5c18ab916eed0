"""Resumable builds: each embedded batch is saved as it is done, so a killed build continues where it stopped."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Checkpoint", "Progress"]


@dataclass
class Progress:
    """What the batches saved so far hold."""
    consumed: int = 0  # catalog rows read (indexed or skipped): where the catalog stream resumes
    batches: int = 0
    vectors: list = field(default_factory=list)  # one (n, dims) float32 array per batch
    cells: list = field(default_factory=list)  # one (n, dims) uint8 array per batch: where each maximum was
    items: list = field(default_factory=list)  # one metadata dict per indexed product, in row order
    hashes: list = field(default_factory=list)  # per indexed product, the sha256 (hex) of its image bytes, or None
    skipped: list = field(default_factory=list)  # (reason, product id) per skipped row


class Checkpoint:
    """parts/<batch>.npy (vectors), parts/<batch>.cells.npy (their cells) and parts/<batch>.json (items, skips) in
    the build's staging folder, and
    progress.json, replaced atomically after each batch: a batch counts only once all of it is on disk."""

    def __init__(self, root: Path, key: dict):
        self.parts = root / "parts"
        self.progress_file = root / "progress.json"
        # the catalog, embedder and batching the parts come from; anything else starts over
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        self.progress = Progress()  # what the saved batches hold: resume() reads it, save() adds to it

    def resume(self) -> Progress:
        """The saved progress of a build with the same key; an empty Progress (and a clean folder) otherwise."""
        self.progress = self._read()
        return self.progress

    def _read(self) -> Progress:
        try:
            saved = json.loads(self.progress_file.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("key") != self.key:
            shutil.rmtree(self.parts, ignore_errors=True)
            self.parts.mkdir(parents=True)
            return Progress()
        progress = Progress(consumed=saved["consumed"], batches=saved["batches"])
        for batch in range(progress.batches):
            vectors = np.load(self.parts / f"{batch:06d}.npy", allow_pickle=False)
            if vectors.size:  # a batch whose every row was skipped has none
                progress.vectors.append(vectors)
                progress.cells.append(np.load(self.parts / f"{batch:06d}.cells.npy", allow_pickle=False))
            part = json.loads((self.parts / f"{batch:06d}.json").read_text())
            progress.items += part["items"]
            progress.hashes += part["hashes"]
            progress.skipped += [tuple(skip) for skip in part["skipped"]]
        return progress

    def save(self, *, rows_read: int, items: list[dict], vectors: np.ndarray | None, cells: np.ndarray | None,
             skipped: list[tuple], hashes: list[str | None]) -> None:
        """Add one batch of `rows_read` catalog rows: its files first, then the progress that makes it count.
        `vectors`, `cells`: (len(items), dims), None without items; `hashes`: the sha256 (hex) of each item's image
        bytes, or None where there are none (a later build reuses the vectors of images it has seen)."""
        progress, batch = self.progress, self.progress.batches
        _save(self.parts / f"{batch:06d}.npy", vectors if vectors is not None else np.zeros((0, 0), np.float32))
        if vectors is not None:
            _save(self.parts / f"{batch:06d}.cells.npy", cells)
        (self.parts / f"{batch:06d}.json").write_text(json.dumps({"items": items, "skipped": skipped,
                                                                  "hashes": hashes}))
        progress.consumed += rows_read
        progress.batches += 1
        if vectors is not None:
            progress.vectors.append(vectors)
            progress.cells.append(cells)
        progress.items += items
        progress.hashes += hashes
        progress.skipped += skipped
        temporary = self.progress_file.with_suffix(".tmp")
        temporary.write_text(json.dumps({"key": self.key, "consumed": progress.consumed,
                                         "batches": progress.batches}))
        os.replace(temporary, self.progress_file)

    def remove(self) -> None:
        shutil.rmtree(self.parts, ignore_errors=True)
        self.progress_file.unlink(missing_ok=True)

    def skip_counts(self) -> tuple[Counter, dict]:
        """(reason -> count, reason -> first three product ids) of the skipped rows."""
        counts, examples = Counter(), {}
        for reason, product_id in self.progress.skipped:
            counts[reason] += 1
            if len(examples.setdefault(reason, [])) < 3:
                examples[reason].append(product_id)
        return counts, examples


def _save(path: Path, array: np.ndarray) -> None:
    """np.save, but a full disk raises ENOSPC ("No space left on device"): numpy's own write reports a short write
    without an errno."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    path.write_bytes(buffer.getvalue())
