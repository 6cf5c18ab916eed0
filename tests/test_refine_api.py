"""/refine through the running app (Gradio's client and MCP): steering by example as an API client does it, on the
tests' synthetic catalog and model (random weights)."""

import pytest
from gradio_client import Client, handle_file

import synthetic_catalog
from app_process import RunningApp
from conftest import IMAGE_SIZE, run_build
from test_app import call_mcp


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """120 products whose article type is what their picture shows (tests/synthetic_catalog.labelled_products),
    built by the real CLI and served: (the rows, a client of the app)."""
    folder = tmp_path_factory.mktemp("labelled")
    rows = synthetic_catalog.labelled_products(120, seed=5)
    catalog = synthetic_catalog.write_parquet(folder / "catalog.parquet", rows, extra_bad_rows=False)
    built = run_build("--dataset", str(catalog), "--weights", "random", "--image-size", str(IMAGE_SIZE),
                      "--batch-size", "8", "--out", str(folder / "index"))
    assert built.returncode == 0, built.stderr
    with RunningApp({"INDEX_DIR": str(folder / "index"), "GRADIO_TEMP_DIR": str(folder / "gradio")},
                    folder / "app.log") as running:
        yield rows, Client(running.wait_until_ready().url, verbose=False, download_files=False)


def refine(client, **arguments):
    return client.predict(api_name="/refine", **arguments)[1]


def test_one_round_of_feedback_raises_article_type_precision(labelled):
    """Every other product as the query: its 10 most similar (/similar), then one round on /refine that likes those
    of its article type and unlikes the others. Article-type P@10 rises by at least 0.12 on average (leaving the
    unliked out without moving the query gave +0.10)."""
    rows, client = labelled
    types = {str(row["id"]): row["articleType"] for row in rows}
    before, after = [], []
    for row in rows[::2]:
        query, wanted = str(row["id"]), row["articleType"]
        shown = [product["id"] for product in client.predict(id=query, k=10, api_name="/similar")[1]]
        liked = [product for product in shown if types[product] == wanted]
        unliked = [product for product in shown if types[product] != wanted]
        refined = [product["id"] for product in refine(client, id=query, like=liked, unlike=unliked, k=10)]
        assert query not in refined and not set(unliked) & set(refined)
        before.append(sum(types[p] == wanted for p in shown) / 10)
        after.append(sum(types[p] == wanted for p in refined) / 10)
    gain = sum(after) / len(after) - sum(before) / len(before)
    assert gain >= 0.12, f"article-type P@10 {sum(before) / len(before):.3f} -> {sum(after) / len(after):.3f}"


def test_refine_takes_a_photo_a_comma_separated_string_and_filters(client, catalog_rows, tmp_path):
    photo = tmp_path / "shirt.jpg"
    catalog_rows[3]["image"].save(photo, quality=92)
    plain = client.predict(image=handle_file(str(photo)), k=6, api_name="/recommend")[1]
    liked, unliked = plain[1]["id"], plain[0]["id"]
    results = refine(client, image=handle_file(str(photo)), like=liked, unlike=f" {unliked} ,", k=6,
                     gender=catalog_rows[3]["gender"])
    assert len(results) == 6 and unliked not in {r["id"] for r in results}
    assert {r["gender"] for r in results} == {catalog_rows[3]["gender"]}  # within the filter
    assert set(results[0]) == set(plain[0])  # the same schema as /recommend


@pytest.mark.parametrize("arguments, message", [
    ({"like": ["no-such-id"]}, "No product with id 'no-such-id'"),
    ({}, "at least one liked product"),
    ({"unlike": "15970,"}, "No product with id '15970'"),
    ({"like": ["x"] * 100_000}, "names 100,000 products; at most 200"),  # refused before any id is looked up
])
def test_refine_refuses_unknown_ids_and_nothing_to_look_for(client, arguments, message):
    with pytest.raises(Exception, match=message):
        refine(client, **arguments)


def test_refine_is_an_mcp_tool_with_described_parameters(app, catalog_rows):
    query, liked = str(catalog_rows[3]["id"]), str(catalog_rows[9]["id"])
    tools, [answer] = call_mcp(app, ("refine", {"id": query, "like": [liked], "k": 3}))
    properties = next(tool for tool in tools if tool.name == "refine").inputSchema["properties"]
    assert {"image", "id", "like", "unlike", "k", "gender", "article_type", "colour"} <= set(properties)
    assert all(properties[name].get("description") for name in properties)
    assert "comma-separated" in properties["like"]["description"]
    assert not answer.isError and liked in str(answer.content)
