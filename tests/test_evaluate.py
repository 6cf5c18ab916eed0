"""scripts/evaluate.py: leave-one-out precision@K and mAP@10 on a hand-checked case, and the CLI on a built index."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from app_process import QUIET_ENV, ROOT

from scripts.evaluate import evaluate, load

pytestmark = pytest.mark.fast  # python -m pytest -m fast

# Six unit vectors in 2-d. Row 1 is an exact copy of row 0 (the same picture under another id), rows 2 and 3
# mirror each other, so from rows 0, 1 and 5 they are tied, and rows 0, 1 and 5 are tied as seen from row 4.
VECTORS = np.array([[1, 0], [1, 0], [0.8, 0.6], [0.8, -0.6], [0, 1], [-1, 0]], dtype=np.float32)
# Squared distances: 0-2 = 0-3 = 0.4, 0-4 = 2, 0-5 = 4, 2-3 = 1.44, 2-4 = 0.8, 2-5 = 3.6, 3-4 = 3.2, 4-5 = 2.
# Neighbours (query and its copies left out; ties by lower row):
#   q0: 2 3 4 5      q1: 2 3 4 5      q2: 0 1 4 3 5      q3: 0 1 2 4 5      q4: 2 0 1 5 3      q5: 4 2 3 0 1
LABELS = {
    "type": ["A", "A", "B", "A", "B", "B"],
    "colour": ["Red", "Red", "Blue", "Blue", None, "Green"],
    "gender": ["Men", "Men", None, "Women", "Men", "Women"],
}
# P@10 divides by 10 although at most 5 neighbours exist.
# type:   q0 rel 0 1 0 0, R=1 (row 1 is a copy): P@1 0, P@5 1/5, P@10 1/10, AP P@2 = 1/2
#         q1 the same as q0:                      P@1 0, P@5 1/5, P@10 1/10, AP 1/2
#         q2 rel 0 0 1 0 1, R=2:                  P@1 0, P@5 2/5, P@10 2/10, AP (1/3 + 2/5) / 2 = 11/30
#         q3 rel 1 1 0 0 0, R=2:                  P@1 1, P@5 2/5, P@10 2/10, AP (1 + 1) / 2 = 1
#         q4 rel 1 0 0 1 0, R=2:                  P@1 1, P@5 2/5, P@10 2/10, AP (1 + 2/4) / 2 = 3/4
#         q5 rel 1 1 0 0 0, R=2:                  P@1 1, P@5 2/5, P@10 2/10, AP 1
#         6 queries: P@1 3/6, P@5 (2/5 + 8/5) / 6 = 1/3, P@10 1/6, mAP (30+30+22+60+45+60)/60 / 6 = 247/360
# colour: q0, q1 Red only on each other (R=0), q4 missing, q5 Green only once: not counted.
#         q2 rel 0 0 0 1 0, R=1: P@1 0, P@5 1/5, P@10 1/10, AP P@4 = 1/4
#         q3 rel 0 0 1 0 0, R=1: P@1 0, P@5 1/5, P@10 1/10, AP P@3 = 1/3
#         2 queries: P@1 0, P@5 1/5, P@10 1/10, mAP (1/4 + 1/3) / 2 = 7/24
# gender: q2 missing: not counted.
#         q0 rel 0 0 1 0, R=1 (row 1 is a copy):  P@1 0, P@5 1/5, P@10 1/10, AP P@3 = 1/3
#         q1 the same as q0
#         q3 rel 0 0 0 0 1, R=1:                  P@1 0, P@5 1/5, P@10 1/10, AP P@5 = 1/5
#         q4 rel 0 1 1 0 0, R=2:                  P@1 0, P@5 2/5, P@10 2/10, AP (1/2 + 2/3) / 2 = 7/12
#         q5 rel 0 0 1 0 0, R=1:                  P@1 0, P@5 1/5, P@10 1/10, AP P@3 = 1/3
#         5 queries: P@1 0, P@5 6/25, P@10 3/25, mAP (1/3 + 1/3 + 1/5 + 7/12 + 1/3) / 5 = 107/300
EXPECTED = {
    "type": {"queries": 6, "precision@1": 1 / 2, "precision@5": 1 / 3, "precision@10": 1 / 6, "mAP@10": 247 / 360},
    "colour": {"queries": 2, "precision@1": 0, "precision@5": 1 / 5, "precision@10": 1 / 10, "mAP@10": 7 / 24},
    "gender": {"queries": 5, "precision@1": 0, "precision@5": 6 / 25, "precision@10": 3 / 25, "mAP@10": 107 / 300},
}


@pytest.mark.parametrize("batch", [1, 4, 256])  # a chunk boundary must not change a figure
def test_hand_checked_figures(batch):
    result = evaluate(VECTORS, LABELS, batch=batch)
    assert (result["products"], result["queries"]) == (6, 6)
    assert result["fields"] == {name: pytest.approx(figures) for name, figures in EXPECTED.items()}


def test_a_sample_of_queries_counts_only_those():
    # q4 alone: type AP 3/4, gender AP 7/12; colour is missing for q4, so nothing counts
    fields = evaluate(VECTORS, LABELS, queries=np.array([4]))["fields"]
    assert fields["type"] == pytest.approx({"queries": 1, "precision@1": 1, "precision@5": 2 / 5,
                                            "precision@10": 1 / 5, "mAP@10": 3 / 4})
    assert fields["gender"]["mAP@10"] == pytest.approx(7 / 12)
    assert fields["colour"] == {"queries": 0, "precision@1": None, "precision@5": None, "precision@10": None,
                                "mAP@10": None}


def test_ap_divides_by_the_relevant_products_in_the_catalog_up_to_ten():
    # 14 unit vectors 10 degrees apart: row 0's neighbours are rows 1, 2, ..., 13 in that order.
    angles = np.radians(10 * np.arange(14))
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    labels = {"pair": ["X", "X", *["Y"] * 11, "X"],  # relevant at ranks 1 and 13, R=2: AP = P@1 / 2
              "all": ["Z"] * 14}  # R=13 but at most 10 can be found: AP = 10 / min(10, 13) = 1
    fields = evaluate(vectors, labels, queries=np.array([0]))["fields"]
    assert fields["pair"] == pytest.approx({"queries": 1, "precision@1": 1, "precision@5": 1 / 5,
                                            "precision@10": 1 / 10, "mAP@10": 1 / 2})
    assert fields["all"] == pytest.approx({"queries": 1, "precision@1": 1, "precision@5": 1, "precision@10": 1,
                                           "mAP@10": 1})


def run_evaluate(*args: str) -> subprocess.CompletedProcess:
    """scripts/evaluate.py as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **QUIET_ENV}, check=False)


def test_cli_on_a_built_index_matches_the_function(stand_in_index, tmp_path):
    index = stand_in_index
    result = run_evaluate("--index", str(index), "--json", str(tmp_path / "quality.json"))
    assert result.returncode == 0, result.stderr
    assert "P@1" in result.stdout and "mAP@10" in result.stdout
    assert all(field in result.stdout for field in ("articleType", "subCategory", "colour", "gender"))
    written = json.loads((tmp_path / "quality.json").read_text())
    vectors, labels = load(index)
    assert written == {"index": str(index), **evaluate(vectors, labels)}
    assert written["products"] == written["queries"] == len(vectors) == 37  # 36 products and one photo copy
    for figures in written["fields"].values():
        assert set(figures) == {"queries", "precision@1", "precision@5", "precision@10", "mAP@10"}
        assert 0 < figures["queries"] <= 37 and all(0 <= v <= 1 for k, v in figures.items() if k != "queries")


def test_cli_does_not_load_the_model(stand_in_index):
    code = ("import runpy, sys; sys.argv = ['evaluate.py', '--index', sys.argv[1], '--queries', '5']\n"
            "try: runpy.run_path('scripts/evaluate.py', run_name='__main__')\n"
            "except SystemExit as done: assert done.code == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    result = subprocess.run([sys.executable, "-c", code, str(stand_in_index)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("damage, message", [
    (lambda index: shutil.rmtree(index), "No index at"),
    (lambda index: (index / "vectors.npy").write_bytes(b"\x93NUMPY"), "vectors.npy has 6 bytes"),
    (lambda index: (index / "items.parquet").unlink(), "items.parquet missing"),
])
def test_a_missing_or_damaged_index_exits_1_with_the_reason(stand_in_index, tmp_path, damage, message):
    index = tmp_path / "index"
    shutil.copytree(stand_in_index, index)
    damage(index)
    result = run_evaluate("--index", str(index))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr
