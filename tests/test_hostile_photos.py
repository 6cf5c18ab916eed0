"""A few MB that would cost a careless decoder gigabytes (issue 21, item 2), sent to the running app one at a time:
each is answered with results or a clear refusal, raises the memory of the app and its children by at most 300 MB
above their level before the first of them, and the next visitor is answered."""

import httpx
import pytest

from app_process import RunningApp
from hostile_photos import SLOW_URL, SLOW_URL_PAUSE, hostile_photos, send
from photo_proxy import PhotoProxy
from phone_photos import encoded

MEMORY_LIMIT = 300e6
REFUSALS = {"a 30,000,000x1 PNG": "too long and thin", "a 1x30,000,000 PNG": "too long and thin",
            "a URL sending 2 GB slowly": "did not arrive within"}


@pytest.fixture(scope="module")
def hostile_app(built_index, tmp_path_factory):
    proxy = PhotoProxy()
    proxy.endless[SLOW_URL] = SLOW_URL_PAUSE
    folder = tmp_path_factory.mktemp("hostile-app")
    env = {"INDEX_DIR": str(built_index[0]), "GRADIO_TEMP_DIR": str(folder / "gradio"), **proxy.app_env()}
    try:
        with RunningApp(env, folder / "app.log") as app:
            yield app.wait_until_ready()
    finally:
        proxy.close()


def test_no_hostile_photo_costs_the_app_more_than_300_mb(hostile_app, catalog_rows):
    ordinary = encoded(catalog_rows[5]["image"].convert("RGB"), "JPEG")
    with httpx.Client(timeout=120) as http:
        assert send(http, hostile_app.url, ordinary)[1] == "8 results"  # warm: the model's first call allocates
        start = hostile_app.tree_resident_bytes()
        for name, photo in [*hostile_photos().items(), ("a URL sending 2 GB slowly", SLOW_URL)]:
            hostile_app.reset_peak()
            _, told = send(http, hostile_app.url, photo)
            grown = hostile_app.tree_resident_bytes("VmHWM") - start
            assert REFUSALS.get(name, "8 results") in told, f"{name}: {told}"
            assert grown <= MEMORY_LIMIT, f"{name} raised the app's memory by {grown / 1e6:.0f} MB at its peak"
            assert send(http, hostile_app.url, ordinary)[1] == "8 results", f"the visitor after {name}"
