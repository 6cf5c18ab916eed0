"""The README's promises that CI and Spaces rely on."""

import fnmatch
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from app_process import QUIET_ENV, ROOT, free_port

README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text().splitlines()
# A fresh Debian 12: the distribution's python3 (/usr/bin/python3) is the only Python, and there is no `python`
FRESH = ("env", "-i", "PATH=/usr/bin:/bin")


def pinned(package: str) -> str:
    return re.search(rf"^{package}(\[\w+\])?==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(2)


def readme_command(section: str) -> str:
    """The one bash block of README's `section`."""
    text = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"```bash\n(.+?)\n```", text, re.S)
    return command


@pytest.mark.fast
def test_spaces_front_matter_matches_the_pinned_gradio():
    front_matter = README.split("---")[1]
    assert f"sdk_version: {pinned('gradio')}\n" in front_matter
    assert 'python_version: "3.11"' in front_matter and "app_file: app.py" in front_matter


@pytest.mark.fast
def test_the_suggested_hardware_is_a_spaces_flavor():
    from huggingface_hub import SpaceHardware

    (hardware,) = re.findall(r"^suggested_hardware: (\S+)$", README.split("---")[1], re.M)
    assert hardware in {flavor.value for flavor in SpaceHardware}


@pytest.mark.fast
def test_every_binary_file_goes_through_lfs_as_the_hub_requires():
    """A Space refuses a push that holds a binary file outside LFS/Xet (.gitattributes)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    binary = [name for name in filter(None, names)
              if (ROOT / name).is_file() and b"\0" in (ROOT / name).read_bytes()[:8000]]  # git's own test
    assert "docs/screenshot.png" in binary
    attributes = subprocess.run(["git", "check-attr", "filter", "--", *binary], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.splitlines()
    assert [line for line in attributes if not line.endswith(": filter: lfs")] == []


@pytest.mark.fast
@pytest.mark.parametrize("section", ["Run it", "Run the tests"])
def test_the_readme_commands_need_no_python_on_path(section):
    command = readme_command(section)
    assert "\n" not in command  # one command to paste
    # no `python` or `pip` from PATH: the venv's, made by scripts/setup.sh with the distribution's python3
    assert not re.search(r"(^|[;&|] *)(python|pip)\S* ", command), command
    assert re.match(r"\./scripts/setup\.sh (app|test) && \.venv/bin/python ", command)


@pytest.mark.fast
def test_ci_runs_exactly_the_readme_test_command_with_the_distributions_python_alone():
    assert f"""{' '.join(FRESH)} HOME="$HOME" bash -c '{readme_command("Run the tests")}'""" in CI
    assert ".venv/bin/python -m pytest -m install" in CI  # the app command, below
    assert not [line for line in CI if re.match(r"(python|pip)\S* ", line)]  # the rest with the venv's Python


@pytest.mark.fast
def test_pytest_never_collects_from_the_venv_or_node_modules(request):
    patterns = request.config.getini("norecursedirs")
    for folder in (".venv", "node_modules"):
        assert any(fnmatch.fnmatch(folder, pattern) for pattern in patterns), folder
    # what setup.sh installs and what the app's first start makes (index: a link to .index.generations/<time>)
    paths = [".venv/bin/python", "tests/js/node_modules/x", "index", ".index.generations/x", ".index.building/x"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert ignored == paths


@pytest.mark.install
@pytest.mark.timeout(1800)  # a first run installs TensorFlow and the rest into .venv: minutes
def test_the_readme_app_command_serves_with_the_distributions_python_alone(built_index, tmp_path):
    """The README's app command, as written, with only /usr/bin and /bin on PATH and none of this environment's
    variables, on a small index with random weights (without one it would download the Hub dataset)."""
    port = free_port()
    env = [f"{name}={value}" for name, value in {**QUIET_ENV, "HOME": os.environ["HOME"], "GRADIO_SERVER_PORT": port,
                                                  "INDEX_DIR": built_index[0]}.items()]
    log = tmp_path / "app.log"
    process = subprocess.Popen([*FRESH, *env, "bash", "-c", readme_command("Run it")], cwd=ROOT,
                               stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 1700
        while time.monotonic() < deadline:
            assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"the app did not answer:\n{log.read_text()}")
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # bash, scripts/setup.sh or the app it started
        process.wait(timeout=30)
    output = log.read_text()
    assert "home = /usr/bin\n" in (ROOT / ".venv" / "pyvenv.cfg").read_text()  # made by the distribution's python3
    assert "Requirement already satisfied" in output or "Successfully installed" in output
