"""A video file for Chromium's fake camera (--use-file-for-fake-video-capture): Y4M, the format it reads raw."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT, FPS = 640, 480, 5  # Chromium needs an even width and height


def frame_showing(product: Image.Image, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """(height, width, 3) uint8: the product photo scaled to the frame's height, centred on white, as a person
    holding it up to the camera would show it."""
    scale = height / product.height
    photo = product.convert("RGB").resize((round(product.width * scale), height), Image.Resampling.BICUBIC)
    frame = Image.new("RGB", (width, height), "white")
    frame.paste(photo, ((width - photo.width) // 2, 0))
    return np.asarray(frame)


def write_y4m(path: Path, frames: list[np.ndarray]) -> Path:
    """Write RGB frames (height, width, 3), all of one even size, as a 4:2:0 Y4M file; Chromium loops it and its
    fake camera has that size. Returns the absolute path."""
    path = Path(path).resolve()  # Chromium needs an absolute path
    height, width = frames[0].shape[:2]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            red, green, blue = (frame[..., channel].astype(np.float32) for channel in range(3))
            y = 0.299 * red + 0.587 * green + 0.114 * blue  # BT.601 full range, as JPEG
            cb = 128 - 0.168736 * red - 0.331264 * green + 0.5 * blue
            cr = 128 + 0.5 * red - 0.418688 * green - 0.081312 * blue
            out.write(b"FRAME\n")
            out.write(_bytes(y))
            for chroma in (cb, cr):  # 2x2 averages: 4:2:0
                out.write(_bytes(chroma.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))))
    return path


def _bytes(plane: np.ndarray) -> bytes:
    return np.clip(np.rint(plane), 0, 255).astype(np.uint8).tobytes()


def jpeg(frame: np.ndarray) -> bytes:
    """A camera frame as the page sends it: JPEG at the browser's default quality (canvas.toDataURL's 0.92)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()
