"""The settings an index is built with; the manifest records them and a query must use the same."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_DATASET", "Settings"]

DEFAULT_DATASET = "ashraq/fashion-product-images-small"  # ~44k product photos on white, with gender/type/colour


@dataclass(frozen=True)
class Settings:
    weights: str = "imagenet"  # "imagenet" (downloaded by Keras), a local Keras weights file, or "random"
    seed: int = 0  # initialises weights="random" deterministically, so its index can be queried again later
    image_size: int = 224  # ResNet50's training resolution; smaller is faster and coarser
    precision: str = "float32"  # or "bf16": computes in bfloat16, faster on CPUs with AVX512-BF16 or AMX only
    trees: int = 16  # Annoy trees: more give better recall per query at the cost of build time and disk
    coarse_dims: int = 256  # Annoy works on the vectors' first principal components (docs/index.md)
    candidates: int = 100  # Annoy pool re-ranked exactly; at least 10x k, so ANN misses rarely reach the top k
    search_k: int = 20_000  # Annoy nodes inspected per query (recall@10 >= 0.999 on 44k-250k synthetic features)
