"""The README's promises that CI and Spaces rely on."""

import re

from app_process import ROOT

README = (ROOT / "README.md").read_text()


def pinned(package: str) -> str:
    return re.search(rf"^{package}(\[\w+\])?==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(2)


def test_spaces_front_matter_matches_the_pinned_gradio():
    front_matter = README.split("---")[1]
    assert f"sdk_version: {pinned('gradio')}\n" in front_matter
    assert 'python_version: "3.11"' in front_matter and "app_file: app.py" in front_matter


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"```bash\n(.+?)\n```", README)
    test_command = next(command for command in commands if "pytest" in command)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
