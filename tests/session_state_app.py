"""The app as `python app.py` starts it, which also writes, on SIGUSR1, what Gradio holds in its sessions' state to
the file $SESSION_STATE_DUMP, with how many live viewers' last frames the page remembers: how a test reads the
running app's memory of a session (tests/test_session_state.py)."""

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr  # noqa: E402

import app  # noqa: E402

launched = []
_launch = gr.Blocks.launch


def launch_and_remember(self, *args, **kwargs):
    launched.append(self)
    return _launch(self, *args, **kwargs)


def described(value):
    """A JSON-able picture of a held value: arrays by shape, so that a test sees what is there without the bytes."""
    if isinstance(value, np.ndarray):
        return {"ndarray": list(value.shape)}
    if dataclasses.is_dataclass(value):
        return {field.name: described(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [described(item) for item in value]
    if isinstance(value, dict):
        return {str(key): described(item) for key, item in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def dump(*_):
    blocks = launched[0]
    holder = blocks.server_app.state_holder
    sessions = {session: {"components": described(list(state.components)),
                          "state": {str(key): described(value) for key, value in state.state_data.items()}}
                for session, state in list(holder.session_data.items())}
    pages = {id(fn.fn.__self__): fn.fn.__self__ for fn in blocks.fns.values() if hasattr(fn.fn, "__self__")}
    remembered = sum(len(page.last_frames) for page in pages.values() if hasattr(page, "last_frames"))
    Path(os.environ["SESSION_STATE_DUMP"]).write_text(
        json.dumps({"sessions": sessions, "live frames remembered": remembered}, default=repr))


gr.Blocks.launch = launch_and_remember
signal.signal(signal.SIGUSR1, dump)
app.main()
