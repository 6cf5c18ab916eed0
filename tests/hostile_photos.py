"""Requests of a few MB that cost a careless decoder gigabytes (issue 21): files under the upload limit (20 MB) at or
near the pixel limit, and a URL that would send 2 GB slowly. tests/test_hostile_photos.py and
scripts/bench_hostile.py send them to the running app, one at a time, each followed by an ordinary visitor."""

from __future__ import annotations

import json
import time

import httpx
from PIL import Image, ImageDraw

from phone_photos import encoded
from visitors import rest_recommend

FRAMES = 1000  # an animated GIF's frames and a TIFF's pages
SLOW_URL = "http://photos.hf.co/two-gigabytes.jpg"  # photo_proxy.PhotoProxy sends it 64 kB at a time, without end
SLOW_URL_PAUSE = 0.05  # seconds between its 64 kB pieces: 2 GB would take 27 minutes


def _drawing(mode: str, size: tuple[int, int], background) -> Image.Image:
    """Flat shapes (so the file stays small) with a garment-like outline in the middle."""
    picture = Image.new(mode, size, background)
    draw = ImageDraw.Draw(picture)
    width, height = size
    draw.rectangle([width // 4, height // 6, 3 * width // 4, 5 * height // 6], fill=(200, 30, 40) + (255,) * (
        mode == "RGBA"))
    draw.ellipse([width // 3, height // 3, 2 * width // 3, 2 * height // 3], fill=(20, 40, 160) + (128,) * (
        mode == "RGBA"))
    return picture


def thin_png(width: int, height: int) -> bytes:
    """30,000,000x1: few pixels, a few kB, but scaled up to a usable height it would be gigabytes."""
    return encoded(Image.new("1", (width, height)), "PNG")


def rgba_png(megapixels: float = 59.9) -> bytes:
    """Just under the pixel limit, with transparency: 240 MB decoded, and each RGBA step copies it again."""
    width = round((megapixels * 1e6 * 4 / 3) ** 0.5)
    return encoded(_drawing("RGBA", (width, int(megapixels * 1e6) // width), (0, 0, 0, 0)), "PNG")


def big_jpeg(size: tuple[int, int] = (10_000, 6_000)) -> bytes:
    """60 MP, the most the app accepts: 180 MB decoded at full size."""
    return encoded(_drawing("RGB", size, "white"), "JPEG", quality=85)


def many_frame_gif(frames: int = FRAMES, size: tuple[int, int] = (1000, 1000)) -> bytes:
    """An animation of `frames` frames: each frame is a picture of its own for a decoder that walks them all."""
    first = _drawing("RGB", size, "white").convert("P")
    rest = [Image.new("P", size, index % 200) for index in range(1, frames)]
    return encoded(first, "GIF", save_all=True, append_images=rest, duration=20, loop=0, optimize=False)


def many_page_tiff(pages: int = FRAMES, size: tuple[int, int] = (1000, 1000)) -> bytes:
    """A document of `pages` pages, compressed, so a few MB hold gigabytes of pixels."""
    first = _drawing("RGB", size, "white")
    rest = [Image.new("L", size, index % 256) for index in range(1, pages)]  # grey pages: quicker to write
    return encoded(first, "TIFF", save_all=True, append_images=rest, compression="tiff_adobe_deflate")


def hostile_photos() -> dict[str, bytes]:
    """Each file by what it is, as the report and the test name it."""
    return {
        "a 30,000,000x1 PNG": thin_png(30_000_000, 1),
        "a 1x30,000,000 PNG": thin_png(1, 30_000_000),
        "a 59.9 MP RGBA PNG": rgba_png(),
        "a 60 MP JPEG": big_jpeg(),
        f"a {FRAMES}-frame GIF": many_frame_gif(),
        f"a {FRAMES}-page TIFF": many_page_tiff(),
    }


def send(http: httpx.Client, url: str, photo: bytes | str) -> tuple[float, str]:
    """`photo` (a file's bytes, or a URL the app fetches) through /recommend: (milliseconds, what the visitor is
    told: "8 results" or the refusal's message)."""
    started = time.perf_counter()
    if isinstance(photo, bytes):
        status, text = rest_recommend(http, url, photo)
    else:
        image = {"path": photo, "url": photo, "meta": {"_type": "gradio.FileData"}}
        posted = http.post(f"{url}/gradio_api/call/recommend", json={"data": [image, 8, "All", "All", "All"]})
        status, text = posted.status_code, posted.text
        if status == 200:
            text = http.get(f"{url}/gradio_api/call/recommend/{posted.json()['event_id']}").text
    milliseconds = (time.perf_counter() - started) * 1000
    if status != 200:
        return milliseconds, f"refused {status}: {text[:200]}"
    answer = json.loads([line for line in text.splitlines() if line.startswith("data:")][-1][len("data:"):])
    if "event: complete" in text:
        return milliseconds, f"{len(answer[1])} results"
    return milliseconds, (answer or {}).get("error") or "an error without a message"


if __name__ == "__main__":  # sizes, for a look
    for name, data in hostile_photos().items():
        print(f"{name}: {len(data) / 1e6:.2f} MB")
