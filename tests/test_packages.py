"""The package layout (docs/design.md): each package's public names are its modules' `__all__`, each reachable from
the package, and no module grows past 350 lines."""

import ast
import importlib
from pathlib import Path

import pytest

from app_process import ROOT

pytestmark = pytest.mark.fast  # python -m pytest -m fast

PACKAGES = ("recommender.pipeline", "recommender.serve", "recommender.index")


def declared(module_path: Path) -> list[str]:
    for node in ast.parse(module_path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__":
            return list(ast.literal_eval(node.value))
    return []


@pytest.mark.parametrize("name", PACKAGES)
def test_a_package_offers_exactly_its_modules_public_names(name):
    package = importlib.import_module(name)
    folder = ROOT / Path(*name.split("."))
    public = {n for path in folder.glob("*.py") if path.name != "__init__.py" for n in declared(path)}
    assert set(package.__all__) == public
    for public_name in package.__all__:
        assert getattr(package, public_name) is not None


def test_no_module_is_over_350_lines():
    long = {str(path.relative_to(ROOT)): n for path in (ROOT / "recommender").rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 350}
    assert not long, long
