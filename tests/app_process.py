"""`python app.py` in a subprocess on a free port, for the tests and the benchmark."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}


def resident_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (VmRSS), or its peak since start or since reset_peak (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


def process_tree(pid: int) -> list[int]:
    """`pid` and its children, theirs, and so on (Linux)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return [pid] + [descendant for child in children for descendant in process_tree(child)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Many visitors from one machine, as behind the Spaces proxy: the app trusts one proxy hop, and each simulated
# visitor names its own address in X-Forwarded-For (recommender/serve/clients.py counts requests per address).
BEHIND_A_PROXY = {"TRUSTED_PROXY_HOPS": "1"}


def visitor(number: int) -> dict:
    """gradio_client headers of simulated visitor `number`: an address of its own (TEST-NET-3, never routed)."""
    return {"X-Forwarded-For": f"203.0.{113 + number // 250}.{number % 250 + 1}"}


class RunningApp:
    """`python app.py` (or another Gradio `command`) in a subprocess, as on a fresh machine; `url` once it answers.
    As a context manager (`with RunningApp(...) as app:`) it is stopped however the block ends."""

    def __init__(self, env: dict, log: Path, command: list[str] | None = None, cwd: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            command or [sys.executable, str(Path(cwd) / "app.py")], cwd=cwd, stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **QUIET_ENV, "GRADIO_SERVER_NAME": "127.0.0.1",
                 "GRADIO_SERVER_PORT": str(self.port), **env})

    def wait_until_ready(self, timeout: float = 240) -> "RunningApp":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"app did not answer within {timeout} s:\n{self.output()}")

    def resident_bytes(self) -> int:
        """The app's resident memory (VmRSS), in bytes."""
        return resident_bytes(self.process.pid)

    def tree_resident_bytes(self, field: str = "VmRSS") -> int:
        """The resident memory of the app and its children (the live camera's model), summed; with "VmHWM", their
        peaks since reset_peak."""
        return sum(resident_bytes(pid, field) for pid in process_tree(self.process.pid))

    def reset_peak(self) -> None:
        """From now, each process's peak (VmHWM) starts again from its current level (Linux's clear_refs)."""
        for pid in process_tree(self.process.pid):
            Path(f"/proc/{pid}/clear_refs").write_text("5")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __enter__(self) -> "RunningApp":
        return self

    def __exit__(self, *_) -> None:
        self.stop()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
