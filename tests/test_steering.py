"""Steering by example on the page (recommender/serve/steering.py and the page's handlers): what each event does with
the marks, on conftest's stand-in index (the model is not the subject; the browser's side is test_steering_page)."""

from types import SimpleNamespace

import numpy as np
import pytest

import recommender.serve.page as page_module
from recommender.serve.explain import Explainer
from recommender.serve.outputs import PageOutputs
from recommender.serve.page import Page, Product
from recommender.serve.photos import QueryPhotos
from recommender.serve.steering import MAX_MARKS, Marks, marks_in_link, marks_sent, share_query

pytestmark = pytest.mark.fast  # python -m pytest -m fast

ANY3 = ("All", "All", "All")


@pytest.fixture(scope="module")
def recommender(stand_in_recommender):
    return stand_in_recommender


def no_model(data):
    pytest.fail("the model ran: steering reads stored vectors only")


@pytest.fixture
def page(recommender):
    return Page(recommender, QueryPhotos(no_model))


@pytest.fixture
def photo(recommender):
    """A photo's query as the session keeps it: a View without its picture (here a catalog product's)."""
    return Explainer(recommender).product(list(recommender.row_of_id)[4]).without_picture()


def marked(like=(), unlike=(), seq=1):
    return SimpleNamespace(_data={"like": list(like), "unlike": list(unlike), "seq": seq})


def ids(outputs):
    return [record["id"] for record in outputs.details]


def test_marking_results_shows_the_query_moved_by_them_and_keeps_only_ids(page, recommender, photo):
    plain = page.show(recommender, photo, 8, ANY3)
    assert not plain.marks and plain.steer["mode"] == "photo" and plain.steer["ids"] == ids(plain)
    liked, unliked = ids(plain)[5], ids(plain)[1]
    steered = page.steer(marked([liked], [unliked], seq=3), None, photo, 8, *ANY3)
    expected = [r.id for r in recommender.refine(photo.vector, [liked], [unliked], 8)]
    assert ids(steered) == expected and ids(steered) != ids(plain) and unliked not in ids(steered)
    assert steered.marks == Marks((liked,), (unliked,))  # the session keeps ids, never a picture
    assert steered.query is photo  # the query stays the photo's: "start over" goes back to it
    assert steered.steer["like"] == [{"id": liked, "name": recommender.product(liked).name}]
    assert steered.steer["seq"] == 3 and steered.steer["ids"] == expected
    assert steered.status.startswith("Steered by your marks (1 liked and 1 not liked): 8 results")


def test_start_over_returns_to_the_photos_own_results(page, recommender, photo):
    plain = page.show(recommender, photo, 8, ANY3)
    page.steer(marked([ids(plain)[3]], [ids(plain)[0]]), None, photo, 8, *ANY3)
    again = page.steer(marked(), None, photo, 8, *ANY3)  # "Start over" sends no marks
    assert ids(again) == ids(plain) and not again.marks and "Steered" not in again.status


def test_k_and_filters_keep_the_marks(page, recommender, photo):
    plain = page.show(recommender, photo, 8, ANY3)
    marks = Marks((ids(plain)[2],), (ids(plain)[0],))
    kind = recommender.filter_choices("article_type")[0]
    rerun = page.rerun(None, photo, marks, 4, "All", kind, "All")
    expected = [r.id for r in recommender.refine(photo.vector, marks.like, marks.unlike, 4, {"article_type": kind})]
    assert ids(rerun) == expected and len(expected) == 4 and rerun.marks == marks
    assert all(recommender.product(i).metadata["articleType"] == kind for i in ids(rerun))


def test_more_like_a_result_keeps_the_other_marks(page, recommender, photo):
    plain = page.show(recommender, photo, 8, ANY3)
    marks = Marks((ids(plain)[2], ids(plain)[3]), (ids(plain)[5],))
    clicked = page.clicked(ids(plain), False, marks, SimpleNamespace(index=3), 8, *ANY3)
    assert clicked.product_id == ids(plain)[3] and clicked.marks == Marks((ids(plain)[2],), (ids(plain)[5],))
    expected = recommender.refine(None, [ids(plain)[2]], [ids(plain)[5]], 8, query_product=ids(plain)[3])
    assert ids(clicked) == [r.id for r in expected] and clicked.steer["mode"] == "product"


def test_a_new_query_starts_without_marks(page, recommender):
    example = page.example_clicked(SimpleNamespace(index=1), 8, *ANY3)
    assert not example.marks and example.steer["mode"] == "product"
    assert not page.cleared().marks


def test_a_shared_link_carries_the_marks_and_opens_the_same_results(page, recommender, monkeypatch):
    said = []
    monkeypatch.setattr(page_module.gr, "Warning", said.append)
    product = list(recommender.row_of_id)[7]
    plain = page.show(recommender, Product(product), 8, ANY3)
    steered = page.steer(marked([ids(plain)[4]], [ids(plain)[0], ids(plain)[1]]), product, None, 8, *ANY3)
    query = share_query(product, steered.marks)
    assert f"[Share this steered search]({query})" in steered.links
    params = dict(part.split("=") for part in query[1:].split("&"))
    opened = page.opened(SimpleNamespace(query_params=params), 8, *ANY3)
    assert ids(opened) == ids(steered) and opened.marks == steered.marks and not said
    # ids this catalog does not hold are left out, and said
    opened = page.opened(SimpleNamespace(query_params={**params, "like": params["like"] + ",nope,<b>"}), 8, *ANY3)
    assert ids(opened) == ids(steered) and said == ["Marked products of this link that this catalog does not "
                                                    "hold, left out: 2."]


def test_a_photos_search_is_shared_as_its_liked_products(page, recommender, photo):
    plain = page.show(recommender, photo, 8, ANY3)
    steered = page.steer(marked([ids(plain)[2]], [ids(plain)[3]]), None, photo, 8, *ANY3)
    query = share_query(None, steered.marks)
    assert query == f"?like={ids(plain)[2]}&unlike={ids(plain)[3]}"
    opened = page.opened(SimpleNamespace(query_params={"like": ids(plain)[2], "unlike": ids(plain)[3]}), 8, *ANY3)
    assert opened.steer["mode"] == "marks" and opened.query is None and opened.product_id is None
    assert ids(opened) == [r.id for r in recommender.refine(None, [ids(plain)[2]], [ids(plain)[3]], 8)]
    # not liking alone says nothing to look for: no link, and such a link opens nothing
    assert share_query(None, Marks((), (ids(plain)[3],))) is None
    assert page.opened(SimpleNamespace(query_params={"unlike": ids(plain)[3]}), 8, *ANY3) == PageOutputs.skip()
    # the marks alone, the last liked one removed: said, not an error
    emptied = page.steer(marked([], [ids(plain)[3]]), None, None, 8, *ANY3)
    assert emptied.details == [] and emptied.status.startswith("Nothing to look for")


def test_a_live_frames_results_are_not_steered(page, recommender):
    vector = np.asarray(recommender.index.vectors[3])
    some = list(recommender.row_of_id)[:2]
    outputs = page.steer(marked([some[0]], [some[1]]), None, vector, 6, *ANY3)
    assert not outputs.marks and outputs.steer["mode"] == "live"
    assert ids(outputs) == [r.id for r in recommender.nearest(vector, 6)]


def test_what_the_page_sends_is_not_trusted(recommender):
    known = list(recommender.row_of_id)[:3]
    assert marks_sent({"like": [known[0], "nope"], "unlike": [known[1]]}, recommender) == Marks((known[0],),
                                                                                               (known[1],))
    assert marks_sent({"like": [known[0]], "unlike": [known[0]]}, recommender) == Marks((), (known[0],))
    assert marks_sent({"like": {"a": 1}}, recommender) == Marks()
    assert marks_sent({"like": [known[0]] * (MAX_MARKS + 1)}, recommender) == Marks()
    assert marks_sent({"like": f"{known[0]}, {known[2]}"}, recommender) == Marks((known[0], known[2]))
    marks, left_out = marks_in_link({"like": ",".join(["x"] * 500)}, recommender)
    assert marks == Marks() and left_out == MAX_MARKS


def test_why_this_match_with_marks_explains_against_the_query_itself(page, recommender, photo):
    plain = page.show(recommender, photo, 8, ANY3)
    marks = Marks((ids(plain)[2],), ())
    why = page.why_clicked(True, ids(plain), None, photo, "", marks, SimpleNamespace(index=1))
    assert "steered by your marks (1 liked)" in why.text and why.details["product_id"] == ids(plain)[1]
    alone = page.why_clicked(True, ids(plain), None, None, "", marks, SimpleNamespace(index=1))
    assert "marked products alone" in alone.text and alone.details is None
