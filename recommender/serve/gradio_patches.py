"""Every change this app makes to Gradio's own behaviour, in one place, each with why: its internals replaced, and
its components with a preprocess or postprocess of our own. Written against Gradio 6.31.0 (requirements.txt pins it):
a new Gradio version may move what these replace, and tests/test_session_state.py, tests/test_photos.py,
tests/test_page_inputs.py, tests/test_live_share.py and tests/test_explain.py check what each patch is for."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from recommender.serve.data_urls import data_url, from_data_url

if TYPE_CHECKING:
    from recommender.serve.photos import QueryPhotos

__all__ = ["RefuseDeepLinks", "SERVER_PATH_REFUSED", "delete_mcp_copies", "drop_from_gradio_lists", "id_list",
           "in_memory_image", "live_camera", "never_record_values", "refuse_server_paths_clearly"]


def drop_from_gradio_lists(path: str) -> None:
    """Gradio remembers every path a request used, to delete it at shutdown, and never forgets one: ours are gone
    already, and the lists would grow with every photo."""
    from gradio.context import LocalContext

    blocks = LocalContext.blocks.get(None)
    if blocks is None:
        return
    blocks.upload_file_set.discard(path)
    for block in blocks.blocks.values():
        temp_files = getattr(block, "temp_files", None)
        if temp_files:
            temp_files.discard(path)


def delete_mcp_copies(photos: QueryPhotos) -> None:
    """Gradio's MCP server saves a tool's base64 image to its temp folder, then uploads that file to the app
    through its own client (so the event gets our in-memory upload) and never deletes it: have each such file
    deleted as soon as its upload arrives."""
    from gradio.mcp import GradioMCPServer

    convert = GradioMCPServer.convert_strings_to_filedata
    if getattr(convert, "deletes_copies", False):
        return

    def convert_and_expect_uploads(self, value, filedata_positions):
        converted = convert(self, value, filedata_positions)
        for path in _file_paths(converted):
            if not path.startswith(("http://", "https://")):
                photos.expect_upload_of(path)
        return converted

    convert_and_expect_uploads.deletes_copies = True
    GradioMCPServer.convert_strings_to_filedata = convert_and_expect_uploads


SERVER_PATH_REFUSED = ("This image names a file on the server, which is not accepted: send the photo itself (upload "
                       "it) or a public http(s) URL.")


def refuse_server_paths_clearly() -> None:
    """Gradio refuses an input naming a file outside its upload folder (an index file, say) with InvalidPathError,
    whose message its clients never see ({"error": null}): say why, as for the files it lets through (QueryPhotos.open
    refuses those)."""
    import gradio as gr
    from gradio import processing_utils
    from gradio.exceptions import InvalidPathError

    check = processing_utils._check_allowed
    if getattr(check, "says_why", False):
        return

    def check_and_say_why(path, check_in_upload_folder: bool):
        try:
            return check(path, check_in_upload_folder)
        except InvalidPathError:
            if check_in_upload_folder:  # an input's file, before preprocess
                raise gr.Error(SERVER_PATH_REFUSED) from None
            raise

    check_and_say_why.says_why = True
    processing_utils._check_allowed = check_and_say_why


def never_record_values(components) -> None:
    """Gradio writes every input's and output's value into the session's state (for deep links, which this app does
    not offer), and keeps it for as long as the session: for these components (the photo's small copy, live frames,
    explanation overlays) it records nothing, so no copy of a photo outlives its event."""
    from gradio.state_holder import SessionState

    private = getattr(SessionState._update_value_in_config, "private_ids", None)
    if private is None:
        record = SessionState._update_value_in_config

        def record_unless_private(self, key: int, value):
            return record(self, key, None if key in record_unless_private.private_ids else value)

        record_unless_private.private_ids = private = set()
        SessionState._update_value_in_config = record_unless_private
    private.update(component._id for component in components)


def in_memory_image(**options):
    """gr.Image whose value (a PIL image) is sent as a data URL, never written to Gradio's folder: an explanation's
    overlay is a picture of the query photo. (Wrapped, not subclassed: Gradio writes a .pyi stub next to every
    component subclass.)"""
    import gradio as gr
    from gradio.data_classes import Base64ImageData

    image = gr.Image(**options)

    def postprocess(value):
        if value is None:
            return None
        buffer = io.BytesIO()
        value.save(buffer, format="JPEG", quality=90)
        return Base64ImageData(url=data_url(buffer.getvalue()))

    image.postprocess = postprocess
    return image


def live_camera(**options):
    """gr.Image streaming the camera whose frames (the browser sends JPEG data URLs) reach the handler as bytes, not
    decoded: a frame dropped after its wait is never decoded, and an unchanged one only at 1/8 scale; decoding
    every one cost the CPU that photo searches wait for. Anything but a data URL is decoded as gr.Image does.
    (Wrapped, not subclassed: see in_memory_image.)"""
    import gradio as gr

    image = gr.Image(**options)
    decode = image.preprocess

    def preprocess(payload):
        if payload is not None and (payload.url or "").startswith("data:"):
            return from_data_url(payload.url)
        return decode(payload)

    image.preprocess = preprocess
    return image


class RefuseDeepLinks:
    """ASGI middleware: Gradio's deep-link route writes the session's component values, a photo's copy among them,
    into a file of the upload folder that nothing deletes. The app offers no deep links: the route answers 404."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].rstrip("/").endswith("/gradio_api/deep_link"):
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"This app keeps no deep links."})
            return
        await self.app(scope, receive, send)


def _file_paths(value) -> list[str]:
    """The paths of the FileData dicts in a nested value."""
    if isinstance(value, dict):
        return [value["path"]] if isinstance(value.get("path"), str) else [
            path for item in value.values() for path in _file_paths(item)]
    if isinstance(value, (list, tuple)):
        return [path for item in value for path in _file_paths(item)]
    return []


def id_list(**options):
    """gr.JSON for a list of product ids, described to API and MCP clients as a list of strings or one
    comma-separated string: gr.JSON's own description, a type of `{}`, is not a schema, and an MCP client's
    validation refuses every value against it. (Wrapped, not subclassed, as query_image.)"""
    import gradio as gr

    component = gr.JSON(**options)
    schema = {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
              "description": "product ids: a list, or one comma-separated string"}
    component.api_info = component.api_info_as_input = lambda: schema
    return component
