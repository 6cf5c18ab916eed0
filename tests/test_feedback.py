"""Steering by example (recommender/serve/feedback.py, Recommender.refine, scripts/evaluate.py --feedback): the
refined query on hand-checked vectors, and what a refinement may and may not return."""

import numpy as np
import pytest

from recommender.index import SAME_IMAGE
from recommender.serve.feedback import NothingToRefine, refined_query
from recommender.serve.search import UnknownProduct
from scripts.evaluate import evaluate_feedback

pytestmark = pytest.mark.fast  # python -m pytest -m fast


@pytest.fixture(scope="module")
def recommender(stand_in_recommender):
    """What a refinement returns is the subject, not the model: conftest's stand-in index (the real build, search and
    filters, a numpy function for the model)."""
    return stand_in_recommender


def test_rocchio_moves_the_query_toward_the_liked_and_away_from_the_unliked():
    # 1 * [1, 0, 0] + 0.75 * [0, 1, 0] - 1 * [0, 0, 1] = [1, 0.75, -1], of length sqrt(2.5625) = 1.6008
    vector = refined_query(np.array([1.0, 0, 0]), np.array([[0, 1.0, 0]]), np.array([[0, 0, 1.0]]),
                           weights=(1, 0.75, 1))
    np.testing.assert_allclose(vector, [1 / 1.6008, 0.75 / 1.6008, -1 / 1.6008], atol=1e-4)
    # the marks alone: the liked products' mean direction, [0.6, 0.8] + [0.8, 0.6] -> [1, 1] / sqrt(2)
    np.testing.assert_allclose(refined_query(None, np.array([[0.6, 0.8], [0.8, 0.6]]), np.empty((0, 2))),
                               [2 ** -0.5, 2 ** -0.5], atol=1e-6)


def test_the_linear_model_is_ridge_regression_on_the_marks():
    # X = [q, liked, unliked] = [[1, 0], [0, 1], [-1, 0]], y = [1, 1, -1]: w = (X'X + 0.1 I)^-1 X'y
    # = [[2.1, 0], [0, 1.1]]^-1 [2, 1] = [0.95238, 0.90909], of length 1.31662: [0.72336, 0.69048]
    vector = refined_query(np.array([1.0, 0]), np.array([[0, 1.0]]), np.array([[-1.0, 0]]), method="linear",
                           ridge=0.1)
    np.testing.assert_allclose(vector, [0.72336, 0.69048], atol=1e-5)


def test_nothing_to_look_for_is_refused():
    with pytest.raises(NothingToRefine, match="at least one liked product"):
        refined_query(None, np.empty((0, 3)), np.array([[0, 0, 1.0]]))


# Four unit vectors in 2-d; from row 0 the plain ranking is 1 (dot 0.8), 2 (0.6), 3 (0).
VECTORS = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]], dtype=np.float32)
LABELS = {"type": ["A", "B", "A", "B"]}


def test_feedback_rounds_hand_checked():
    """Query 0 (type A; R = 1, row 2). Round 0: 1 B, 2 A, 3 B: P@10 1/10, AP = P@2 / min(10, 1) = 1/2.
    Round 1: row 2 liked, rows 1 and 3 unliked and gone; 1 [1, 0] + 0.75 [0.6, 0.8] - ([0.8, 0.6] + [0, 1]) / 2
    = [1.05, -0.2]; left: row 2 alone, relevant: P@10 1/10, AP 1. Round 2: nothing new to mark, the same."""
    result = evaluate_feedback(VECTORS, LABELS, rounds=2, queries=np.array([0]), weights=(1, 0.75, 1))
    rounds = result["fields"]["type"]
    assert [r["queries"] for r in rounds] == [1, 1, 1]
    assert [r["precision@10"] for r in rounds] == pytest.approx([0.1, 0.1, 0.1])
    assert [r["mAP@10"] for r in rounds] == pytest.approx([0.5, 1.0, 1.0])


def test_a_refinement_never_returns_an_unliked_product_or_the_query_product(recommender):
    ids = list(recommender.row_of_id)
    plain = [r.id for r in recommender.similar(ids[0], k=6)]
    unliked = plain[:2]
    refined = [r.id for r in recommender.refine(None, like=[plain[2]], unlike=unliked, k=6, query_product=ids[0])]
    assert len(refined) == 6 and not set(refined) & {*unliked, ids[0]}
    assert plain[2] in refined  # the liked product itself is among what it looks like


def test_a_refinement_is_exact_within_filters(recommender):
    ids = list(recommender.row_of_id)
    filters = {"article_type": recommender.filter_choices("article_type")[0]}
    rows = recommender.matching_rows(filters)
    liked = [r.id for r in recommender.similar(ids[1], k=2)]
    results = recommender.refine(None, like=liked, k=5, filters=filters)
    vector = refined_query(None, recommender.index.rows([recommender.row_of(i) for i in liked]), np.empty((0, 0)))
    vectors = np.asarray(recommender.index.vectors)
    exact = []  # brute force over the filter's rows, nearest first, a picture shown once (copies: SAME_IMAGE)
    for row in rows[np.argsort(np.linalg.norm(vectors[rows] - vector, axis=1), kind="stable")]:
        if all(np.linalg.norm(vectors[row] - vectors[kept]) >= SAME_IMAGE for kept in exact):
            exact.append(int(row))
    assert [recommender.row_of(r.id) for r in results] == exact[:5]


def test_unknown_ids_are_refused(recommender):
    with pytest.raises(UnknownProduct, match="No product with id 'nope'"):
        recommender.refine(None, like=["nope"])
    with pytest.raises(NothingToRefine):
        recommender.refine(None, unlike=[next(iter(recommender.row_of_id))])



def test_a_product_query_is_its_stored_vector_moved_by_the_marks(recommender):
    """The query product's stored vector is the query, and only the query: not also an unliked vector, which would
    cancel it and leave the liked products alone."""
    ids = list(recommender.row_of_id)
    for product_id in ids[:4]:
        liked = recommender.similar(product_id, k=8)[-1].id
        vector = recommender.index.rows([recommender.row_of(product_id)])[0]
        expected = [r.id for r in recommender.refine(vector, like=[liked], k=7) if r.id != product_id][:6]
        assert [r.id for r in recommender.refine(None, like=[liked], k=6, query_product=product_id)] == expected
