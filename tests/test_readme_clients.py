"""Every client example of README's "Call the API" runs against the app, copied from the README as written but for
the address, the photo (shirt.jpg, made here) and the catalog id: editing the README changes what is tested."""

import contextlib
import io
import json
import re
import shutil
import subprocess

import pytest

from app_process import ROOT
from test_app import call_mcp
from test_readme import README

SECTION = README.split("\n## Call the API\n", 1)[1].split("\n## ", 1)[0]
ADDRESS, ID = "http://127.0.0.1:7860", "15970"  # the README's; the tests' app and index have their own
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"  # @gradio/client, pinned: npm ci --prefix tests/js
PHOTOGRAPHED, ASKED = 3, 9  # catalog rows: the blue T-shirt for women in shirt.jpg, the product whose id is asked


def examples(language: str) -> list[str]:
    """The section's code blocks fenced as `language`, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", SECTION, re.M | re.S)


@pytest.fixture
def shirt(tmp_path, catalog_rows, monkeypatch):
    """A folder holding shirt.jpg, a photo of a product of the index, as the examples' working directory."""
    catalog_rows[PHOTOGRAPHED]["image"].save(tmp_path / "shirt.jpg", quality=92)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def ours(code: str, app, catalog_rows) -> str:
    return code.replace(ADDRESS, app.url).replace(ID, str(catalog_rows[ASKED]["id"]))


def assert_found_the_shirt(ids: list[str], catalog_rows):
    """An example's five results: products of the index, the photographed one first."""
    assert len(ids) == 5 and ids[0] == str(catalog_rows[PHOTOGRAPHED]["id"])
    assert set(ids) <= {str(row["id"]) for row in catalog_rows}


def test_python_examples(app, catalog_rows, shirt):
    namespace, output = {}, io.StringIO()
    blocks = examples("python")
    assert len(blocks) == 3  # /recommend; with filters, and /similar; /explain
    with contextlib.redirect_stdout(output):
        for code in blocks:
            exec(ours(code, app, catalog_rows), namespace)
    _, *products, explained = output.getvalue().splitlines()  # "Loaded as API: <address>", then the prints
    assert_found_the_shirt([line.split()[0] for line in products], catalog_rows)
    similar = [product["id"] for product in namespace["results"]]  # the last results: /similar's
    assert len(similar) == 5 and str(catalog_rows[ASKED]["id"]) not in similar
    why = namespace["why"]
    assert float(explained.split()[0]) == why["similarity"] and len(why["query_regions"]) == 3


def test_javascript_example(app, catalog_rows, shirt):
    # scripts/setup.sh test installs both: a missing one fails here, never skips the example unseen
    assert shutil.which("node") and NODE_MODULES.exists(), "needs node and @gradio/client: ./scripts/setup.sh test"
    (code,) = examples("js")
    (shirt / "search.mjs").write_text(ours(code, app, catalog_rows))
    (shirt / "node_modules").symlink_to(NODE_MODULES)  # as if `npm install` had run in this folder
    run = subprocess.run(["node", "search.mjs"], cwd=shirt, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert_found_the_shirt([line.split()[0] for line in run.stdout.splitlines()], catalog_rows)


def test_curl_example(app, catalog_rows, shirt):
    assert shutil.which("curl"), "needs curl: ./scripts/setup.sh test installs it"
    (code,) = examples("bash")
    run = subprocess.run(["bash", "-c", ours(code, app, catalog_rows)], cwd=shirt, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    event, data = run.stdout.strip().splitlines()[-2:]
    assert event == "event: complete", run.stdout
    gallery, results = json.loads(data.removeprefix("data: "))
    assert len(gallery) == len(results)
    assert_found_the_shirt([product["id"] for product in results], catalog_rows)


def test_mcp_configurations(app):
    local, space = (json.loads(block)["mcpServers"]["fashion-search"]["url"] for block in examples("json"))
    assert re.fullmatch(r"https://<user>-<space>\.hf\.space/gradio_api/mcp/", space)
    assert local.replace(ADDRESS, app.url) == f"{app.url}/gradio_api/mcp/"  # the endpoint call_mcp speaks to
    tools, _ = call_mcp(app)
    assert {tool.name for tool in tools} == {"recommend", "similar", "explain", "refine"}
