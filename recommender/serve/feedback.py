"""Steering by example: "more like these, not like that". The query's vector moves toward the stored vectors of the
products a visitor liked and away from those they unliked (Rocchio's relevance feedback, 1971, as the MARS image
retrieval system used it, Rui et al. 1998), and the moved vector is searched like any other: no model call.

Why Rocchio and these weights: docs/feedback.md (measured by `scripts/evaluate.py --feedback`)."""

from __future__ import annotations

import numpy as np

__all__ = ["METHODS", "ROCCHIO", "NothingToRefine", "refined_query"]

# (query, liked, unliked) weights of Rocchio's formula: SMART's (1, 0.75, 0.15) with the unliked weight raised to 1,
# which took the first round's article-type P@10 from 0.60 to 0.71 on a held-out synthetic catalog (docs/feedback.md)
ROCCHIO = (1.0, 0.75, 1.0)
RIDGE = 0.1  # the linear model's regularisation, for a handful of marked vectors in 2048 dimensions


class NothingToRefine(ValueError):
    """Neither a query nor a liked product: nothing says what to look for."""


def refined_query(query: np.ndarray | None, liked: np.ndarray, unliked: np.ndarray, method: str = "rocchio",
                  weights: tuple[float, float, float] = ROCCHIO, ridge: float = RIDGE) -> np.ndarray:
    """(dims,) unit vector to search with: `query` (dims,) or None (the marks alone), moved by `liked` and `unliked`
    ((m, dims) and (u, dims) stored unit vectors, either may be empty).

    "rocchio": alpha q + beta mean(liked) - gamma mean(unliked), L2-normalised (unit vectors: the nearest by
    euclidean distance are then those of largest dot product with it).
    "linear": a ridge regression on the marked vectors (the query and likes +1, unlikes -1), whose weight vector,
    normalised, is the direction searched: it can weigh dimensions, where Rocchio only averages."""
    liked, unliked = _rows(liked), _rows(unliked)
    if query is None and not len(liked):
        raise NothingToRefine("Give a photo, a product id, or at least one liked product to look for.")
    if method == "linear":
        moved = _ridge_direction(query, liked, unliked, ridge)
    else:
        alpha, beta, gamma = weights
        moved = np.zeros(liked.shape[1] if len(liked) else len(query), np.float64)
        if query is not None:
            moved += alpha * np.asarray(query, np.float64)
        if len(liked):
            moved += beta * liked.mean(axis=0)
        if len(unliked):
            moved -= gamma * unliked.mean(axis=0)
    norm = np.linalg.norm(moved)
    if not norm > 0:  # the marks cancel the query out exactly: keep the query (or the likes) as it was
        moved = np.asarray(query if query is not None else liked.mean(axis=0), np.float64)
        norm = np.linalg.norm(moved)
    return (moved / norm).astype(np.float32)


def _ridge_direction(query, liked, unliked, ridge: float) -> np.ndarray:
    """w = X^T (X X^T + ridge I)^-1 y, in its dual form: m marked rows, not 2048 dimensions, are inverted."""
    rows = [r for r in ([query] if query is not None else []) + list(liked) + list(unliked)]
    targets = [1.0] * (len(rows) - len(unliked)) + [-1.0] * len(unliked)
    x = np.asarray(rows, np.float64)
    dual = np.linalg.solve(x @ x.T + ridge * np.eye(len(x)), np.asarray(targets))
    return x.T @ dual


def _rows(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, np.float64)
    return vectors.reshape(0, 0) if vectors.size == 0 else vectors.reshape(len(vectors), -1)


METHODS = ("rocchio", "linear")
