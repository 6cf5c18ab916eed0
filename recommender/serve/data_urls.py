"""Pictures the browser and the server hand each other as base64 data URLs: a photo's small copy and live frames."""

from __future__ import annotations

import base64

__all__ = ["MAX_DATA_URL_BYTES", "data_url", "from_data_url"]

MAX_DATA_URL_BYTES = 20 * 2**20  # what a data URL may carry (the upload limit): a larger one is not decoded


def data_url(jpeg: bytes | None) -> str:
    """A JPEG as a data URL; "" for None."""
    return "" if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def from_data_url(url: str | None) -> bytes | None:
    """The bytes of a base64 data URL; None for anything else, and for one over MAX_DATA_URL_BYTES, which is never
    decoded (to_rgb then says no image was given). The page sends frames and a 224 px copy: a few tens of kB."""
    header, _, payload = (url or "").partition(",")
    if not (header.startswith("data:") and header.endswith(";base64")) or len(payload) > MAX_DATA_URL_BYTES * 4 / 3:
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        return None
