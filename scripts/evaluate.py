"""Leave-one-out retrieval quality of a built index on its own labels; no model is loaded.

    python scripts/evaluate.py --index index                                     # every product as the query
    python scripts/evaluate.py --index index --queries 2000 --json quality.json  # a seeded sample of 2,000

Each product in turn is the query; its neighbours are all other products ranked by exact euclidean distance
between stored vectors (ties: lower row first), leaving out the query and its copies (rows within SAME_IMAGE of
its vector: the same picture under another id). A neighbour is relevant for a field (articleType, subCategory,
colour = baseColour, gender) when its label equals the query's; R is the number of relevant products in the
catalog, query and copies left out. Per field, a query counts unless its label is missing or R = 0.
precision@K = relevant share of the top K; AP@10 = sum over k <= 10 of precision@k * rel_k / min(10, R); both
are averaged over the counted queries (mAP@10)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from recommender.index import SAME_IMAGE, IndexFiles, IndexUnusable, read_manifest

FIELDS = {"articleType": "articleType", "subCategory": "subCategory", "colour": "baseColour", "gender": "gender"}
KS = (1, 5, 10)  # precision@K; AP is at the largest
TOLERANCE = 1e-4  # float32 dot products of 2048-d unit rows err by < 1e-6 (measured 6e-7): a wide safe margin


def evaluate(vectors: np.ndarray, labels: dict[str, list], queries: np.ndarray | None = None,
             batch: int = 256, progress: bool = False) -> dict:
    """Leave-one-out precision@1/5/10 and mAP@10 of `vectors` (n, dims), unit rows, for each field of
    `labels` (name -> n labels, None or "" for missing); `queries` are rows (default: all).

    Returns {"products": n, "queries": q, "fields": {name: {"queries": counted, "precision@1": ..., "mAP@10":
    ...}}}; a field that no query counts for has None figures."""
    n, depth = len(vectors), max(KS)
    queries = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    codes = {name: _codes(values) for name, values in labels.items()}  # (n,) int, -1 for missing
    totals = {name: np.bincount(c[c >= 0], minlength=c.max(initial=-1) + 1) for name, c in codes.items()}
    sums = {name: np.zeros(len(KS) + 1) for name in labels}  # precision@K..., AP@10
    counted = dict.fromkeys(labels, 0)
    with tqdm(total=len(queries), unit="query", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(queries), batch):
            chunk = queries[start:start + batch]
            for query, similarity in zip(chunk, np.asarray(vectors[chunk]) @ np.asarray(vectors).T):
                top, copies = _neighbours(vectors, int(query), similarity, depth)
                for name, c in codes.items():
                    label = c[query]
                    relevant = totals[name][label] - np.count_nonzero(c[copies] == label) if label >= 0 else 0
                    if relevant == 0:
                        continue
                    hits = np.zeros(depth)
                    hits[:len(top)] = c[top] == label
                    precision = np.cumsum(hits) / np.arange(1, depth + 1)  # precision@k for k = 1..depth
                    ap = np.sum(precision * hits) / min(depth, relevant)
                    sums[name] += [*(precision[k - 1] for k in KS), ap]
                    counted[name] += 1
            bar.update(len(chunk))
    fields = {}
    for name in labels:
        means = sums[name] / counted[name] if counted[name] else [None] * (len(KS) + 1)
        fields[name] = {"queries": counted[name], **{f"precision@{k}": _plain(m) for k, m in zip(KS, means)},
                        f"mAP@{depth}": _plain(means[-1])}
    return {"products": n, "queries": len(queries), "fields": fields}


def _neighbours(vectors, query: int, similarity: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The `depth` nearest rows to row `query` by (exact distance, row), and the rows that are its copies
    (itself included). `similarity` (n,) holds float32 dot products with every row: it only picks candidates."""
    n = len(similarity)
    near_copies = np.count_nonzero(similarity > 1 - TOLERANCE)  # every copy and the query (some close rows too)
    wanted = min(n, depth + near_copies + 1)  # leaves at least `depth` rows once copies are dropped
    threshold = np.partition(similarity, n - wanted)[n - wanted]  # the wanted-th largest
    rows = np.flatnonzero(similarity >= threshold - TOLERANCE)  # and every row that rounding could tie with it
    # float64 distances on the candidates: copies of one vector tie exactly, and the row decides
    distances = np.linalg.norm(np.asarray(vectors[rows], np.float64) - np.asarray(vectors[query], np.float64), axis=1)
    order = np.lexsort((rows, distances))
    rows, distances = rows[order], distances[order]
    copy = (distances < SAME_IMAGE) | (rows == query)
    return rows[~copy][:depth], rows[copy]


def _codes(values: list) -> np.ndarray:
    known = {}
    return np.array([-1 if v in (None, "") else known.setdefault(v, len(known)) for v in values], dtype=np.int64)


def _plain(value) -> float | None:
    return None if value is None else float(value)


def load(root: Path) -> tuple[np.ndarray, dict[str, list]]:
    """The vectors and FIELDS labels of the index in `root`, verified against its manifest."""
    import pyarrow.parquet as pq

    files = IndexFiles(Path(root))
    manifest = read_manifest(files.root)  # checks every file's size and checksum first
    vectors = np.load(files.vectors, mmap_mode="r", allow_pickle=False)  # never unpickle an index file
    items = pq.read_table(files.items, columns=list(FIELDS.values()))
    if vectors.ndim != 2 or len(vectors) != manifest.get("count") or items.num_rows != len(vectors):
        raise IndexUnusable(f"{files.root} holds {vectors.shape} vectors and {items.num_rows} items, the manifest "
                            f"says {manifest.get('count')}: the index is damaged; rebuild or re-download it.")
    return vectors, {name: items.column(field).to_pylist() for name, field in FIELDS.items()}


def table(result: dict) -> str:
    heads = ["field", "queries", *(f"P@{k}" for k in KS), f"mAP@{max(KS)}"]
    lines = ["  ".join(f"{h:>12}" for h in heads)]
    for name, figures in result["fields"].items():
        values = [v for key, v in figures.items() if key != "queries"]
        lines.append("  ".join([f"{name:>12}", f"{figures['queries']:>12}",
                                *(f"{'-' if v is None else f'{v:.3f}':>12}" for v in values)]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="index", help="index folder built by scripts/build_index.py")
    parser.add_argument("--queries", type=int, default=None, help="a random sample of N products as queries")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --queries sample")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.queries is not None and args.queries < 1:
        parser.error("--queries must be at least 1")
    try:
        vectors, labels = load(Path(args.index))
    except IndexUnusable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    queries = None
    if args.queries is not None and args.queries < len(vectors):
        queries = np.sort(np.random.default_rng(args.seed).choice(len(vectors), args.queries, replace=False))
    result = {"index": str(args.index), **evaluate(vectors, labels, queries, progress=True)}
    print(f"{result['queries']} queries over {result['products']} products in {args.index}")
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
