"""What a first start builds: BUILD_LIMIT's values."""

import pytest

from recommender.serve import provision
from recommender.config import Settings
from recommender.serve.provision import IndexUnusable, build_limit, ensure_index

pytestmark = pytest.mark.fast  # python -m pytest -m fast


@pytest.mark.parametrize("text, limit", [("2000", 2000), ("1", 1), (" 10 ", 10), ("all", None), ("ALL", None)])
def test_build_limit_is_a_count_or_all(text, limit):
    assert build_limit(text) == limit


@pytest.mark.parametrize("text", ["0", "-5", "2.5", "", "none", "1e3", "lots"])
def test_a_bad_build_limit_says_what_is_accepted(text):
    with pytest.raises(IndexUnusable, match=r"BUILD_LIMIT is .*: set it to a number of products \(at least 1\), "
                                            r"or to 'all'"):
        build_limit(text)


def test_build_limit_all_builds_from_the_whole_catalog(tmp_path, monkeypatch, capsys):
    asked = {}
    monkeypatch.setattr(provision, "load_catalog", lambda dataset, limit: asked.update(limit=limit) or "catalog")
    monkeypatch.setattr(provision, "build_index", lambda catalog, settings, out: "Indexed 36 products")
    assert ensure_index(tmp_path / "index", None, "data.parquet", build_limit("all"), Settings()) == "built"
    assert asked == {"limit": None}  # load_catalog's "no limit"
    assert "building one from all products of data.parquet" in capsys.readouterr().out
