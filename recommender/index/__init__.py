"""The index on disk: its files and checks (files), the vectors' search (vectors), and its generations, so that a new
index replaces a served one without pulling files from under it (generations)."""

from recommender.index.files import FORMAT_VERSION, IndexFiles, IndexUnusable, load_cells, read_manifest, sha256
from recommender.index.generations import adopt, hold, remove_unheld, swap_into_place
from recommender.index.vectors import SAME_IMAGE, Projection, VectorIndex

__all__ = ["FORMAT_VERSION", "IndexFiles", "IndexUnusable", "Projection", "SAME_IMAGE", "VectorIndex", "adopt",
           "hold", "load_cells", "read_manifest", "remove_unheld", "sha256", "swap_into_place"]
