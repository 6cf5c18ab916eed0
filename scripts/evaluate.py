"""Leave-one-out retrieval quality of a built index on its own labels; no model is loaded.

    python scripts/evaluate.py --index index                                     # every product as the query
    python scripts/evaluate.py --index index --queries 2000 --json quality.json  # a seeded sample of 2,000
    python scripts/evaluate.py --index index --queries 500 --feedback 3          # steering by example, 3 rounds

Each product in turn is the query; its neighbours are all other products ranked by exact euclidean distance
between stored vectors (ties: lower row first), leaving out the query and its copies (rows within SAME_IMAGE of
its vector: the same picture under another id). A neighbour is relevant for a field (articleType, subCategory,
colour = baseColour, gender) when its label equals the query's; R is the number of relevant products in the
catalog, query and copies left out. Per field, a query counts unless its label is missing or R = 0.
precision@K = relevant share of the top K; AP@10 = sum over k <= 10 of precision@k * rel_k / min(10, R); both
are averaged over the counted queries (mAP@10).

--feedback ROUNDS simulates a visitor who steers by example (recommender/serve/feedback.py): for each field apart,
they like the top 10's products sharing the query's label and unlike the others; the query's vector is refined from
every mark so far, the unliked products leave the results, and the new top 10 is scored as above; round 0 is the
plain search. What the visitor sees is scored, so liked products still count in later rounds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from recommender.index import SAME_IMAGE, IndexFiles, IndexUnusable, read_manifest
from recommender.serve.feedback import METHODS, RIDGE, ROCCHIO, refined_query

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


def evaluate_feedback(vectors: np.ndarray, labels: dict[str, list], rounds: int, queries: np.ndarray | None = None,
                      method: str = "rocchio", weights: tuple = ROCCHIO, ridge: float = RIDGE,
                      progress: bool = False) -> dict:
    """P@10 and mAP@10 for each field of `labels` and each round 0..`rounds` of simulated feedback (the module's
    docstring); {"products", "queries", "method", "weights", "fields": {name: [{"queries", "precision@10",
    "mAP@10"} per round]}}."""
    n, depth = len(vectors), max(KS)
    vectors = np.asarray(vectors, np.float32)
    queries = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    codes = {name: _codes(values) for name, values in labels.items()}
    totals = {name: np.bincount(c[c >= 0], minlength=c.max(initial=-1) + 1) for name, c in codes.items()}
    sums = {name: np.zeros((rounds + 1, 2)) for name in labels}
    counted = dict.fromkeys(labels, 0)
    for query in tqdm(queries, unit="query", disable=not progress, file=sys.stderr):
        own = vectors @ vectors[query]
        copies = np.flatnonzero(own > 1 - TOLERANCE)  # candidates; the exact distance decides
        copies = copies[np.linalg.norm(vectors[copies] - vectors[query], axis=1) < SAME_IMAGE]
        for name, c in codes.items():
            label = c[query]
            relevant = totals[name][label] - np.count_nonzero(c[copies] == label) if label >= 0 else 0
            if relevant == 0:
                continue
            counted[name] += 1
            liked, unliked = [], []
            top = _top(own, copies, depth)  # round 0: the plain search
            for round_number in range(rounds + 1):
                if round_number:  # the visitor marks what they see, and the query moves
                    top_relevant = c[top] == label
                    liked += top[top_relevant].tolist()
                    unliked += top[~top_relevant].tolist()
                    similarity = vectors @ refined_query(vectors[query], vectors[liked], vectors[unliked], method,
                                                         weights, ridge)
                    top = _top(similarity, np.concatenate([copies, unliked]).astype(np.int64), depth)
                hits = np.zeros(depth)
                hits[:len(top)] = c[top] == label
                precision = np.cumsum(hits) / np.arange(1, depth + 1)
                sums[name][round_number] += [precision[-1], np.sum(precision * hits) / min(depth, relevant)]
    fields = {name: [{"queries": counted[name], "precision@10": _plain(p / counted[name]) if counted[name] else None,
                      "mAP@10": _plain(ap / counted[name]) if counted[name] else None}
                     for p, ap in sums[name]] for name in labels}
    return {"products": n, "queries": len(queries), "method": method,
            "weights": list(weights) if method == "rocchio" else None, "ridge": ridge if method == "linear" else None,
            "fields": fields}


def _top(similarity: np.ndarray, excluded: np.ndarray, depth: int) -> np.ndarray:
    """The `depth` rows of largest similarity (unit vectors: smallest distance), ties by lower row, none excluded."""
    similarity = similarity.astype(np.float64)
    similarity[excluded] = -np.inf
    wanted = min(depth, len(similarity) - len(np.unique(excluded)))
    candidates = np.argpartition(-similarity, wanted - 1)[:wanted] if wanted < len(similarity) else \
        np.arange(len(similarity))
    order = np.lexsort((candidates, -similarity[candidates]))
    return candidates[order][:wanted]


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


def feedback_table(result: dict) -> str:
    lines = ["  ".join(f"{h:>12}" for h in ("field", "round", "queries", "P@10", "mAP@10"))]
    for name, per_round in result["fields"].items():
        for number, figures in enumerate(per_round):
            values = [figures["precision@10"], figures["mAP@10"]]
            lines.append("  ".join([f"{name:>12}", f"{number:>12}", f"{figures['queries']:>12}",
                                    *(f"{'-' if v is None else f'{v:.3f}':>12}" for v in values)]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="index", help="index folder built by scripts/build_index.py")
    parser.add_argument("--queries", type=int, default=None, help="a random sample of N products as queries")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --queries sample")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--feedback", type=int, default=None, metavar="ROUNDS",
                        help="simulate steering by example for 1 to 3 rounds, per field (articleType, colour)")
    parser.add_argument("--method", choices=METHODS, default="rocchio", help="how --feedback refines the query")
    parser.add_argument("--ridge", type=float, default=RIDGE, help="--method linear's regularisation")
    parser.add_argument("--weights", default=None, help="Rocchio's query,liked,unliked weights, e.g. 1,0.75,0.15 "
                        f"(default {','.join(map(str, ROCCHIO))})")
    args = parser.parse_args(argv)
    if args.queries is not None and args.queries < 1:
        parser.error("--queries must be at least 1")
    if args.feedback is not None and not 1 <= args.feedback <= 3:
        parser.error("--feedback takes 1 to 3 rounds")
    try:
        weights = tuple(float(w) for w in args.weights.split(",")) if args.weights else ROCCHIO
    except ValueError:
        weights = ()
    if len(weights) != 3:
        parser.error("--weights takes three numbers: the query's, the liked products', the unliked products'")
    try:
        vectors, labels = load(Path(args.index))
    except IndexUnusable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    queries = None
    if args.queries is not None and args.queries < len(vectors):
        queries = np.sort(np.random.default_rng(args.seed).choice(len(vectors), args.queries, replace=False))
    if args.feedback is not None:
        steered = {name: labels[name] for name in ("articleType", "colour")}
        result = {"index": str(args.index), **evaluate_feedback(vectors, steered, args.feedback, queries, args.method,
                                                                weights, args.ridge, progress=True)}
        print(f"{result['queries']} queries over {result['products']} products in {args.index}, {args.method}"
              + (f" {tuple(weights)}" if args.method == "rocchio" else f", ridge {args.ridge}"))
        print(feedback_table(result))
    else:
        result = {"index": str(args.index), **evaluate(vectors, labels, queries, progress=True)}
        print(f"{result['queries']} queries over {result['products']} products in {args.index}")
        print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
