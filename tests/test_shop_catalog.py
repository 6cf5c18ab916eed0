"""A shop's own catalog: a CSV or JSON Lines table with its own column names and photos beside it, built by the real
build script, served by the app and queried through gradio_client; and the refusal of every table that does not
fit, each with its message."""

from __future__ import annotations

import csv
import json
import shutil
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app_process import RunningApp
from conftest import IMAGE_SIZE, run_build
from recommender.columns import CatalogUnavailable, Columns
from recommender.pipeline.catalog import load_catalog
from synthetic_catalog import SHOP_COLUMNS, write_shop_table

SHOP_FLAGS = ["--id-column", "SKU", "--image-column", "Photo file", "--name-column", "Title", "--link-column", "url",
              "--price-column", "Price", "--filter-columns", "Category,Main colour"]
MISSING_PHOTO_SKU = "99999"  # a row whose photo file is not there: skipped and counted, the rest indexed


def build(*args: str) -> tuple[Path, str]:
    out = Path(args[args.index("--dataset") + 1]).parent / "index"
    result = run_build(*args, "--weights", "random", "--image-size", str(IMAGE_SIZE), "--batch-size", "8",
                       "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def table_rows(table: Path) -> list[dict]:
    if table.suffix == ".csv":
        with table.open(newline="", encoding="utf-8") as file:
            return list(csv.DictReader(file, delimiter=";"))
    return [json.loads(line) for line in table.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module", params=["csv", "jsonl"])
def shop(request, tmp_path_factory, catalog_rows):
    """The synthetic catalog as a shop's table (its own column names, ids with leading zeros, relative photo paths),
    one row more whose photo is missing; built from another working directory than the table's, and served."""
    folder = tmp_path_factory.mktemp(f"shop-{request.param}")
    table = write_shop_table(folder, request.param, catalog_rows)
    rows = table_rows(table)
    missing = dict(rows[0], SKU=MISSING_PHOTO_SKU, **{"Photo file": "photos/not-there.jpg"})
    with table.open("a", newline="", encoding="utf-8") as file:
        if request.param == "csv":
            csv.DictWriter(file, SHOP_COLUMNS, delimiter=";").writerow(missing)
        else:
            file.write(json.dumps(missing) + "\n")
    out, summary = build("--dataset", str(table), *SHOP_FLAGS)
    with RunningApp({"INDEX_DIR": str(out), "APP_TITLE": "Acme Outfitters", "APP_DESCRIPTION": "Our own catalogue.",
                     "GRADIO_TEMP_DIR": str(folder / "gradio")}, folder / "app.log") as app:
        from gradio_client import Client

        app.wait_until_ready()
        yield SimpleNamespace(table=table, rows={row["SKU"]: row for row in rows}, index=out, summary=summary,
                              app=app, client=Client(app.url, verbose=False))


def test_the_build_reads_the_shops_columns_and_counts_the_missing_photo(shop):
    assert "Indexed 36 products" in shop.summary
    assert f"Skipped 1: missing image file (e.g. {MISSING_PHOTO_SKU})" in shop.summary
    manifest = json.loads((shop.index / "manifest.json").read_text())
    mapping = manifest["dataset"]["columns"]
    assert (mapping["id"], mapping["image"], mapping["name"], mapping["link"], mapping["price"]) == \
        ("SKU", "Photo file", "Title", "url", "Price")
    assert mapping["filters"] == [{"column": "Category", "parameter": "category", "label": "Category"},
                                  {"column": "Main colour", "parameter": "main_colour", "label": "Main colour"}]


def test_the_api_takes_one_parameter_per_filter_column(shop):
    api = shop.client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert [p["parameter_name"] for p in api["/recommend"]["parameters"]] == ["image", "k", "category", "main_colour"]
    assert [p["parameter_name"] for p in api["/similar"]["parameters"]] == ["id", "k", "category", "main_colour"]
    assert all(p["parameter_default"] == "All" for p in api["/recommend"]["parameters"][2:])


def test_results_carry_every_column_the_link_and_the_price(shop):
    from gradio_client import handle_file

    sku = "00004"
    gallery, results = shop.client.predict(image=handle_file(str(shop.table.parent / shop.rows[sku]["Photo file"])),
                                           k=3, api_name="/recommend")
    first, row = results[0], shop.rows[sku]
    assert first["id"] == sku  # the id as the table writes it, leading zeros kept
    assert (first["name"], first["link"], first["price"]) == (row["Title"], row["url"], row["Price"])
    assert {name: first[name] for name in SHOP_COLUMNS if name not in ("SKU", "Photo file")} == \
        {name: row[name] for name in SHOP_COLUMNS if name not in ("SKU", "Photo file")}
    assert gallery[0]["caption"].splitlines() == [row["Title"], f"{row['Price']} · {row['Category']} · "
                                                                 f"{row['Main colour']} · 100% similar"]


@pytest.mark.parametrize("filters", [{"category": "Watches"}, {"main_colour": "Blue"},
                                     {"category": "Handbags", "main_colour": "Green"}])
def test_a_filter_on_a_shop_column_is_exact(shop, filters):
    """The app's answer is the brute-force top k of the products whose columns hold the filter's values."""
    from gradio_client import handle_file

    from recommender.serve.search import Recommender

    recommender = Recommender.load(shop.index)
    photo = shop.table.parent / shop.rows["00020"]["Photo file"]
    columns = {"category": "Category", "main_colour": "Main colour"}
    subset = [row for row, item in enumerate(recommender.items)
              if all(item[columns[name]] == value for name, value in filters.items())]
    assert subset
    query = recommender.embedder.embed_image(photo.read_bytes())
    distances = np.linalg.norm(np.asarray(recommender.index.vectors)[subset] - query, axis=1)
    expected = [recommender.items[subset[i]]["id"] for i in np.argsort(distances, kind="stable")]
    for k in (1, len(subset)):
        _, results = shop.client.predict(image=handle_file(str(photo)), k=k, **filters, api_name="/recommend")
        assert [r["id"] for r in results] == expected[:k]
    _, similar = shop.client.predict(id="00020", k=50, **filters, api_name="/similar")
    assert {r["id"] for r in similar} == set(expected) - {"00020"}


def test_an_unknown_filter_value_is_refused_with_the_known_ones(shop):
    from gradio_client import handle_file

    photo = shop.table.parent / shop.rows["00004"]["Photo file"]
    with pytest.raises(Exception) as refused:
        shop.client.predict(image=handle_file(str(photo)), category="Sandals", api_name="/recommend")
    assert "Sandals" in str(refused.value) and "Watches" in str(refused.value)


def test_the_page_has_the_shops_title_and_filters(shop):
    with urllib.request.urlopen(f"{shop.app.url}/config") as response:
        config = json.load(response)
    dropdowns = [c["props"] for c in config["components"] if c["type"] == "dropdown"]
    assert [(d["label"], d["elem_id"]) for d in dropdowns] == [("Category", "category"),
                                                               ("Main colour", "main_colour")]
    assert set(dropdowns[0]["choices"][0]) == {"All"} or dropdowns[0]["choices"][0][0] == "All"
    assert config["title"] == "Acme Outfitters"
    header = next(c["props"]["value"] for c in config["components"] if c["type"] == "markdown")
    assert header.startswith("# Acme Outfitters\nOur own catalogue.")


@pytest.mark.fast
def test_links_to_the_shop_are_http_only_and_quoted():
    from recommender.serve.outputs import links
    from recommender.serve.search import Result

    def result(id, link):
        return Result(id=id, name='A "quoted" name', distance=0.0, similarity=1.0, image_path="", metadata={},
                      link=link)

    text = links([result("1", "https://shop.example/p/1?size=m&ref=(x) y"), result("2", "javascript:alert(1)"),
                   result("3", None)])
    shop_line = text.split("In the shop: ")[1]
    assert shop_line == "[1](https://shop.example/p/1?size=m&ref=%28x%29%20y \"A 'quoted' name\")"
    assert "In the shop" not in links([result("3", None)])


# Refusals: each before any image is read, naming what exists and the flag to use.

def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("columns, message", [
    (Columns(id="sku"), "has no column 'sku' (--id-column). Its columns are: SKU, Photo file, Title, url, Price, "
                        "Category, Main colour, notes. Name the right one with --id-column."),
    (Columns(id="SKU", image="photo"), "has no column 'photo' (--image-column)."),
    (Columns(id="SKU", image="Photo file", link="link"), "has no column 'link' (--link-column)."),
    (Columns(id="SKU", image="Photo file", price="cost"), "has no column 'cost' (--price-column)."),
    (Columns(id="SKU", image="Photo file", name="name"), "has no column 'name' (--name-column)."),
    (Columns(id="SKU", image="Photo file", filters=("Category", "colour")),
     "has no column 'colour' (--filter-columns)."),
])
@pytest.mark.fast
def test_a_missing_column_is_refused_naming_the_columns_and_the_flag(tmp_path, catalog_rows, columns, message):
    table = write_shop_table(tmp_path, "csv", catalog_rows[:2])
    for photo in (tmp_path / "photos").iterdir():
        photo.unlink()  # nothing is read before the columns are checked: no photo is needed for the refusal
    with pytest.raises(CatalogUnavailable, match="^" + str(table).replace(".", r"\.")) as refused:
        load_catalog(str(table), columns=columns)
    assert message in str(refused.value)


def test_the_cli_refuses_with_the_message_and_builds_nothing(tmp_path, catalog_rows):
    table = write_shop_table(tmp_path, "jsonl", catalog_rows[:2])
    result = run_build("--dataset", str(table), "--id-column", "sku", "--out", str(tmp_path / "index"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {table} has no column 'sku' (--id-column). Its columns are: SKU, ")
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("name, text, columns, message", [
    ("latin1.csv", "id;image;name\n1;a.jpg;Caf\xe9\n", Columns(), "is not UTF-8 text (line 2): save it as UTF-8"),
    ("ragged.csv", "id,image,name\n1,a.jpg,x\n2,b.jpg,Shirt, blue\n", Columns(),
     "line 3: 4 fields where the header has 3. Quote values that hold the delimiter."),
    ("empty.csv", "", Columns(), "is empty: its first line must name the columns."),
    ("urls.csv", "id,image\n1,https://cdn.example/1.jpg\n", Columns(),
     "holds addresses (https://cdn.example/1.jpg): the build reads image files. Download the images first"),
    ("hidden.csv", "SKU,image,Title,name\n1,a.jpg,x,y\n", Columns(id="SKU", name="Title"),
     "its column 'name' would be hidden by each result's own 'name' (from --name-column Title)."),
    ("bad-filter.csv", "id,image,k\n1,a.jpg,x\n", Columns(filters=("k",)),
     "The filter column 'k' cannot be an API parameter"),
    ("bad.jsonl", '{"id": 1, "image": "a.jpg"}\n{"id": 2, "image": \n', Columns(), "line 2: not JSON"),
    ("list.jsonl", '{"id": 1, "image": "a.jpg"}\n[2, "b.jpg"]\n', Columns(),
     "line 2: a JSON object per line is expected, not list."),
])
@pytest.mark.fast
def test_a_table_that_does_not_fit_is_refused_with_what_to_do(tmp_path, name, text, columns, message):
    table = write_csv(tmp_path / name, text, "latin-1" if "latin1" in name else "utf-8")
    with pytest.raises(CatalogUnavailable) as refused:
        load_catalog(str(table), columns=columns)
    assert str(table) in str(refused.value) and message in str(refused.value)


@pytest.mark.fast
def test_a_comma_separated_table_with_a_bom_and_absolute_paths(tmp_path, catalog_rows):
    """As Excel's "CSV UTF-8" writes it: a byte-order mark, commas; photos named by absolute paths."""
    photo = tmp_path / "elsewhere" / "shirt.jpg"
    photo.parent.mkdir()
    catalog_rows[0]["image"].save(photo)
    table = write_csv(tmp_path / "shop.csv", f"\ufeffref,picture,label\n0042,{photo},\"Shirt, blue\"\n")
    catalog = load_catalog(str(table), columns=Columns(id="ref", image="picture", name="label"))
    [product] = list(catalog.rows)
    assert (product.id, product.image_path, product.metadata) == ("0042", str(photo), {"label": "Shirt, blue"})
    assert catalog.columns.filters == () and catalog.total == 1


@pytest.mark.fast
def test_column_flags_on_an_image_folder_are_refused(catalog_folder):
    with pytest.raises(CatalogUnavailable, match="is a folder of images: the column flags"):
        load_catalog(str(catalog_folder), columns=Columns(id="sku"))


@pytest.mark.fast
def test_a_hub_datasets_columns_are_checked_before_any_image_is_downloaded(monkeypatch):
    """The dataset's features (from its card or files) are checked first; its rows, which would download the
    images, are never read."""
    import datasets
    import huggingface_hub

    def rows():
        raise AssertionError("a row was read before the columns were checked")
        yield

    features = datasets.Features({"sku": datasets.Value("string"), "image": datasets.Image()})
    stream = datasets.IterableDataset.from_generator(rows, features=features)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: stream)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, repo, revision=None: SimpleNamespace(sha="0"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with pytest.raises(CatalogUnavailable) as refused:
        load_catalog("someone/shop-photos", columns=Columns(id="SKU"))
    assert str(refused.value) == ("The dataset 'someone/shop-photos' has no column 'SKU' (--id-column). Its columns "
                                  "are: sku, image. Name the right one with --id-column.")


def test_a_running_app_refuses_an_index_with_other_filters(tmp_path, built_index, catalog_rows, capsys):
    """The page's dropdowns and the API's parameters are made at start: a rebuild with other filter columns keeps
    the served index, and says why."""
    from recommender.serve.refresh import IndexHolder

    # the parquet catalog's index as the CLI builds it with `run` (conftest's built_index), copied: its link and the
    # generation it names
    shutil.copytree(built_index[0].parent, tmp_path, symlinks=True, dirs_exist_ok=True)
    out = tmp_path / "index"
    run = ["--weights", "random", "--image-size", str(IMAGE_SIZE), "--batch-size", "8", "--out", str(out)]
    holder = IndexHolder(out)
    (tmp_path / "shop").mkdir()
    table = write_shop_table(tmp_path / "shop", "csv", catalog_rows[:4])
    assert run_build("--dataset", str(table), *SHOP_FLAGS, *run).returncode == 0
    assert holder.check() is False
    assert list(holder.current.filters) == ["gender", "article_type", "colour"]
    assert ("is refused: its filters (category, main_colour) are not the served index's (gender, article_type, "
            "colour): restart the app for it.") in capsys.readouterr().out
