"""Make sure an index is present before serving: keep it, download a prebuilt one, or build a small default one."""

from __future__ import annotations

import shutil
from pathlib import Path

from recommender.pipeline.build import build_index
from recommender.pipeline.catalog import load_catalog
from recommender.config import Settings
from recommender.index import IndexUnusable, read_manifest, swap_into_place
from recommender.pipeline.publish import unpack

__all__ = ["IndexUnusable", "build_limit", "download_index", "ensure_index"]


def build_limit(text: str) -> int | None:
    """BUILD_LIMIT's value: how many products a first start indexes, None for "all" (the whole catalog)."""
    text = text.strip()
    if text.lower() == "all":
        return None
    if text.isdecimal() and int(text) > 0:
        return int(text)
    # IndexUnusable: without a valid limit the app gets no index, and it reports this error and exits
    raise IndexUnusable(f"BUILD_LIMIT is {text!r}: set it to a number of products (at least 1), or to 'all' to "
                        "index the whole catalog on the first start.")


def ensure_index(index_dir: Path, index_repo: str | None, dataset: str, limit: int | None,
                 settings: Settings) -> str:
    """Return how the index at `index_dir` came to be there: "present", "downloaded" or "built". `limit` None
    builds from the whole catalog."""
    index_dir = Path(index_dir)
    if (index_dir / "manifest.json").exists():
        return "present"
    if index_repo:
        download_index(index_repo, index_dir)
        return "downloaded"
    products = "all products" if limit is None else f"the first {limit} products"
    print(f"No index in {index_dir}: building one from {products} of {dataset} "
          f"(weights={settings.weights}). Set INDEX_REPO to download a prebuilt index instead.", flush=True)
    summary = build_index(load_catalog(dataset, limit=limit), settings, index_dir)
    print(summary, flush=True)
    return "built"


def download_index(repo_id: str, index_dir: Path, revision: str | None = None, repo_type: str = "dataset") -> None:
    """Download a prebuilt index (a Hub repo holding a publication of scripts/publish_index.py, or an index folder's
    files as they are) into `index_dir`. The download is unpacked and verified in a staging folder beside it, and
    replaces nothing unless it is a whole, undamaged index."""
    from huggingface_hub import snapshot_download

    index_dir = Path(index_dir)
    staging = index_dir.with_name(f".{index_dir.name}.download")
    print(f"Downloading the index from the Hugging Face {repo_type} repo {repo_id}...", flush=True)
    try:
        snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_dir=staging)
    except Exception as error:  # what was fetched stays in `staging`: the next attempt resumes from it
        raise IndexUnusable(
            f"Could not download the index from the Hub {repo_type} repo '{repo_id}' "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}).\nFix: check INDEX_REPO and the network, "
            "or unset INDEX_REPO to build an index here (python scripts/build_index.py)."
        ) from None
    try:
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        unpack(staging)  # thumbnail shards -> images/
        read_manifest(staging)  # refuse an incomplete, damaged or foreign repo before it replaces anything
    except IndexUnusable as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise IndexUnusable(f"The index downloaded from the Hub {repo_type} repo '{repo_id}' was refused, and "
                            f"{index_dir} left as it was: {error}") from None
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    swap_into_place(staging, index_dir)
