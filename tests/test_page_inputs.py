"""What the page's handlers take from a client as it is sent: a data URL and the address bar's ?item= (issue 21)."""

from types import SimpleNamespace

import pytest
import recommender.serve.data_urls as data_urls
import recommender.serve.page as page_module
from recommender.serve.page import Page
from recommender.serve.photos import QueryPhotos

pytestmark = pytest.mark.fast  # python -m pytest -m fast


@pytest.fixture(scope="module")
def recommender(stand_in_recommender):
    """What the handlers take from a client is the subject here, not the model: conftest's stand-in index, built by
    the real build pipeline with a numpy function for the model."""
    return stand_in_recommender


def test_a_data_url_over_the_limit_is_never_decoded(monkeypatch):
    decoded = []
    monkeypatch.setattr(data_urls, "MAX_DATA_URL_BYTES", 3000)
    monkeypatch.setattr(data_urls.base64, "b64decode", lambda *a, **k: decoded.append(a) or b"x")
    assert data_urls.from_data_url("data:image/jpeg;base64," + "A" * 4004) is None  # 3,003 bytes
    assert not decoded
    assert data_urls.from_data_url("data:image/jpeg;base64," + "A" * 4000) == b"x"


def test_a_shared_link_to_an_unknown_item_is_echoed_as_text(recommender, monkeypatch):
    said = []
    monkeypatch.setattr(page_module.gr, "Warning", said.append)
    page = Page(recommender, QueryPhotos(lambda data: None))
    forged = "<img src=x onerror=alert(1)>" + "A" * 200
    page.opened(SimpleNamespace(query_params={"item": forged}), 8, "All", "All", "All")
    assert said and "<img" not in said[0] and "&lt;img" in said[0] and len(said[0]) < 150, said

