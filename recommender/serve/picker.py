"""The page's photo input: a file, a drop, a paste or a camera snapshot, scaled in the visitor's browser to the size
the search needs and sent once as a JPEG (picker.js), with a crop drawn on the photo itself.

Gradio's own image editor sends a phone photo as two full-size PNGs, several times (95.9 MB for a 3.3 MB, 12 MP JPEG),
which the upload limit refuses, and spends seconds drawing it in the browser; a plain gr.Image sends the original
bytes and has no crop. So the picker is a gr.HTML component with its own script: the browser decodes the photo
(EXIF orientation applied), keeps a copy at most WORK_SIDE across for crops, and uploads at most SEND_SIDE across
through Gradio's upload route (recommender.serve.uploads.InMemoryUploads holds it in memory). It then fires its "input"
event with the upload's path in the event's data: the handler takes the photo from the upload store by that path.
A file the browser cannot draw (HEIC, TIFF, or not an image) is sent as it is, up to the upload limit, and the
server decodes it or says why not.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SEND_SIDE", "photo_picker"]

SEND_SIDE = 1024  # longest side sent: the model sees 224 px, and a crop of the sent photo still has 224 px at 1/4.6
WORK_SIDE = 2048  # longest side the browser keeps for crops (16 MB of pixels at most on the visitor's device)
JPEG_QUALITY = 0.9  # of what is sent: a 1024 px phone photo is 0.1-0.6 MB
BROWSER_MB = 100  # a larger file is refused before the browser decodes it: no phone photo is that large

_HERE = Path(__file__).parent
_TEMPLATE = """
<div class="picker" data-state="empty">
  <p class="title">${heading}</p>
  <p class="empty-hint">Drop a photo here, paste one (Ctrl+V), choose a file or take one with the camera.</p>
  <input type="file" accept="image/*,.heic,.heif" hidden>
  <div class="camera"><video playsinline muted aria-label="The camera's picture"></video>
    <div class="buttons"><button type="button" class="snap primary">Take the photo</button>
      <button type="button" class="camera-off">Cancel</button></div></div>
  <div class="stage"><canvas class="photo" role="img"
    aria-label="Your photo: drag on it to frame a garment and search only that part"></canvas>
    <div class="frame" hidden></div></div>
  <div class="buttons main-buttons">
    <button type="button" class="choose primary">Choose a photo</button>
    <button type="button" class="camera-on">Camera</button>
    <button type="button" class="paste">Paste</button>
    <button type="button" class="whole photo-only">Whole photo</button>
    <button type="button" class="remove photo-only">Remove</button></div>
  <p class="message" role="status" aria-live="polite"></p>
</div>
"""


def photo_picker(label: str, upload_mb: int, **options):
    """gr.HTML for the page's photo. Its "input" event carries the uploaded photo's path and facts in its event
    data (path, bytes, source: upload/drop/paste/webcam/crop, width, height, crop: [left, top, width, height] as
    shares of the photo, undrawn: true when the browser could not draw it); "clear" fires on Remove."""
    import gradio as gr

    return gr.HTML(html_template=_TEMPLATE, css_template=(_HERE / "picker.css").read_text(),
                   js_on_load=(_HERE / "picker.js").read_text(), heading=label, send_side=SEND_SIDE,
                   work_side=WORK_SIDE, quality=JPEG_QUALITY, server_bytes=upload_mb * 2**20,
                   browser_bytes=BROWSER_MB * 2**20, **options)
