"""A numpy stand-in for recommender.embedder.Embedder, for tests whose subject is not the model: the same interface
and shapes ((n, size, size, 3) uint8 in, (n, 2048) float32 L2-normalised vectors and (n, 2048) uint8 cells out), a
fixed function of the pixels, no TensorFlow. Builds a 36-product index in-process in about a second."""

from __future__ import annotations

import numpy as np

from recommender.config import Settings
from recommender.embedder import DIMS
from recommender.images import fit_square, to_rgb

__all__ = ["StandInEmbedder", "stand_in_settings"]

SIZE = 32  # pixels a side: enough to tell the synthetic catalog's shapes and colours apart
GRID = 2  # cells a side, as ResNet50's grid at 64 px: each channel's maximum lies in one of 4 cells
POOL = 4  # each cell is averaged down to POOL x POOL x 3 values before the projection
BIAS = 0.05  # a constant input beside them: small, so that the white around a product counts for little


def stand_in_settings(**changes) -> Settings:
    """The Settings a stand-in index is built with (weights="random": the app warns about such an index)."""
    return Settings(**{"weights": "random", "image_size": SIZE, "trees": 4, **changes})


class StandInEmbedder:
    """Each cell of a GRID x GRID grid over the square picture, averaged to POOL x POOL pixels (as ink: white is 0),
    goes through one fixed random projection and a ReLU to 2048 channels; each channel keeps its largest value over
    the cells (and that cell), as the real embedder's global max pooling does; the result is L2-normalised. A picture
    always gets the same vector, a resized copy a near one (a mirror image need not: cells keep their place). Its
    identity names it, so neither the app nor Recommender.load without `embedder=` takes its index for a ResNet50's."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or stand_in_settings()
        self.size = self.settings.image_size
        self.grid = GRID
        if self.size % (GRID * POOL):
            raise ValueError(f"image_size must be a multiple of {GRID * POOL}")
        inputs = POOL * POOL * 3 + 1  # and a constant: a blank picture still gets a vector of unit length
        rng = np.random.default_rng(self.settings.seed)
        self._projection = (rng.standard_normal((inputs, DIMS)) / np.sqrt(inputs)).astype(np.float32)

    @property
    def identity(self) -> dict:
        return {"model": "tests/stand_in_embedder.py (numpy, no model)", "include_top": False, "pooling": "max",
                "normalization": "l2", "preprocess": "pad to white square, bilinear resize",
                "weights": self.settings.weights, "weights_sha256": None, "seed": self.settings.seed,
                "image_size": self.size, "precision": self.settings.precision, "dims": DIMS}

    def prepare(self, image) -> np.ndarray:
        return fit_square(to_rgb(image), self.size)

    def embed_with_cells(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = np.asarray(batch)
        n, side = len(batch), self.size // (GRID * POOL)  # pixels averaged into one value
        pooled = batch.astype(np.float32).reshape(n, GRID, POOL, side, GRID, POOL, side, 3).mean(axis=(3, 6))
        ink = 1.0 - pooled.transpose(0, 1, 4, 2, 5, 3).reshape(n, GRID * GRID, POOL * POOL * 3) / 255.0  # white: 0
        ink = np.concatenate([ink, np.full((n, GRID * GRID, 1), BIAS, np.float32)], axis=2)
        features = np.maximum(ink @ self._projection, 0.0)  # (n, cells, 2048)
        vectors = features.max(axis=1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32), features.argmax(axis=1).astype(np.uint8)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return self.embed_with_cells(batch)[0]

    def embed_image(self, image) -> np.ndarray:
        return self.embed(self.prepare(image)[None])[0]
