"""Every kind of query input becomes an upright RGB image, or a clear ImageError."""

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from recommender.images import MAX_PIXELS, ImageError, fit_square, to_rgb

pytestmark = pytest.mark.fast  # python -m pytest -m fast


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_transparent_pixels_become_white_not_black():
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (5, 5, 15, 15))
    rgb = to_rgb(encoded(rgba))
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((10, 10)) == (0, 0, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red on the left of a landscape image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    upright = to_rgb(encoded(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert upright.size == (20, 40)
    red, green, blue = upright.getpixel((10, 3))  # the red band is now on top
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "1", "LA"])
def test_other_modes_become_rgb(mode):
    source = Image.new("RGB", (30, 30), (200, 40, 40)).convert(mode)
    rgb = to_rgb(encoded(source, "TIFF" if mode == "CMYK" else "PNG"))
    assert rgb.mode == "RGB" and rgb.size == (30, 30)


def test_cmyk_jpeg_keeps_its_colour():
    cmyk = Image.new("RGB", (30, 30), (200, 40, 40)).convert("CMYK")
    red, green, blue = to_rgb(encoded(cmyk, "JPEG", quality=95)).getpixel((15, 15))
    assert red > 150 and green < 90 and blue < 90


def test_numpy_arrays_of_common_shapes_and_dtypes():
    assert to_rgb(np.zeros((10, 12), np.uint8)).size == (12, 10)
    assert to_rgb(np.ones((10, 12, 3), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(np.zeros((10, 12, 4), np.uint8)).getpixel((0, 0)) == (255, 255, 255)  # fully transparent
    with pytest.raises(ImageError, match="array"):
        to_rgb(np.zeros((10, 12, 5), np.uint8))


def test_tiny_image_is_upscaled_not_refused():
    rgb = to_rgb(encoded(Image.new("RGB", (1, 1), (0, 128, 0))))
    assert min(rgb.size) >= 8 and rgb.getpixel((0, 0)) == (0, 128, 0)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    red, green, blue = to_rgb(buffer.getvalue()).getpixel((8, 8))
    assert red > 200 and blue < 60


@pytest.mark.parametrize("source, message", [
    (None, "No image was given"),
    (b"", "empty"),
    (b"definitely not an image", "not an image"),
    ("/nonexistent/photo.jpg", "No image file"),
])
def test_non_images_get_a_clear_message(source, message):
    with pytest.raises(ImageError, match=message):
        to_rgb(source)


def test_truncated_file_is_refused_clearly():
    data = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        to_rgb(data[: len(data) // 3])


def decoded_in_a_fresh_process(data: bytes) -> tuple[str, str]:
    """(the ImageError's message, how far resident memory rose) of to_rgb(data) in a fresh process, where memory
    freed earlier cannot hide a new allocation."""
    probe = textwrap.dedent("""
        import sys
        from conftest import resident_peak
        from recommender.images import ImageError, to_rgb

        data = sys.stdin.buffer.read()
        with resident_peak() as memory:
            try:
                to_rgb(data)
            except ImageError as error:
                print(error)
        print(memory.bytes)
    """)
    result = subprocess.run([sys.executable, "-c", probe], input=data, cwd=ROOT, capture_output=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    message, grown = result.stdout.decode().splitlines()
    return message, grown


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """Refused from its header alone: decoding it would take 60 MB (one byte a pixel). Measured in a fresh process,
    where memory freed earlier cannot hide a new allocation."""
    side = int(MAX_PIXELS ** 0.5) + 100  # more pixels than allowed, in a PNG of a few kB
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(encoded(Image.new("1", (side, side)), "PNG"))
    assert bomb.stat().st_size < 2_000_000
    message, grown = decoded_in_a_fresh_process(bomb.read_bytes())
    assert "too large" in message
    assert int(grown) < 10e6, f"{int(grown) / 1e6:.0f} MB"


@pytest.mark.parametrize("size", [(30_000_000, 1), (1, 30_000_000), (25_000, 2_000)])
def test_a_long_thin_image_is_refused_before_decoding(size):
    """A few kB of PNG whose pixel count passes the limit, but which, upscaled to MIN_SIDE across (30,000,000x1 to
    240,000,000x8), would take gigabytes: refused from its header, in a fresh process whose memory grows by little."""
    thin = encoded(Image.new("1", size), "PNG")
    assert len(thin) < 200_000
    message, grown = decoded_in_a_fresh_process(thin)
    assert "too long and thin" in message and f"{size[0]}x{size[1]}" in message
    assert int(grown) < 10e6, f"{int(grown) / 1e6:.0f} MB"


def test_fit_square_pads_with_white_and_keeps_aspect():
    portrait = Image.new("RGB", (50, 100), (0, 0, 0))
    square = fit_square(portrait, 32)
    assert square.shape == (32, 32, 3) and square.dtype == np.uint8
    assert (square[:, 0] == 255).all() and (square[16, 16] == 0).all()


def test_a_heic_photo_decodes_like_any_other_under_the_same_pixel_limit(monkeypatch):
    """The iPhone's HEIC (pillow-heif): decoded upright in RGB, and refused before decoding when over the limit."""
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(buffer, format="HEIF", quality=90)
    image = to_rgb(buffer.getvalue())
    assert image.size == (300, 200) and image.mode == "RGB"
    assert np.abs(np.asarray(image, dtype=int).mean(axis=(0, 1)) - (200, 30, 30)).max() < 8
    import recommender.images

    monkeypatch.setattr(recommender.images, "MAX_PIXELS", 300 * 200 - 1)
    with pytest.raises(ImageError, match="too large"):
        to_rgb(buffer.getvalue())


def test_formats_we_do_not_name_are_not_decoded():
    """Pillow can open far more than photos (EPS reaches Ghostscript where it is installed): only named formats."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buffer, format="PPM")  # a format Pillow reads, but no camera writes
    with pytest.raises(ImageError, match="not an image we can read"):
        to_rgb(buffer.getvalue())
