"""scripts/bench.py's command line: where each run's report goes."""

import importlib
import sys
import tempfile

import pytest

from app_process import ROOT

pytestmark = pytest.mark.fast  # python -m pytest -m fast


def test_a_quick_run_never_overwrites_the_published_report(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    bench = importlib.import_module("bench")
    repo, temporary = tmp_path / "repo", tmp_path / "tmp"  # stand-ins for the checkout and the temporary folder
    (repo / "docs").mkdir(parents=True)
    temporary.mkdir()
    (repo / "docs" / "benchmarks.md").write_text("the last full run")
    monkeypatch.setattr(bench, "ROOT", repo)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    monkeypatch.setattr(bench, "BENCHMARKS", [])  # the command line and the report, without the hour of measuring
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick"])
    bench.main()
    assert (repo / "docs" / "benchmarks.md").read_text() == "the last full run"
    report = (temporary / "benchmarks-quick.md").read_text()
    assert report.startswith("# Benchmarks\n\n`python scripts/bench.py --quick`")
    assert f"Report written to {temporary / 'benchmarks-quick.md'}" in capsys.readouterr().out
    assert bench.default_report(quick=False, scale=False) == repo / "docs" / "benchmarks.md"
    assert bench.default_report(quick=True, scale=True) == repo / "docs" / "benchmarks-scale.md"
