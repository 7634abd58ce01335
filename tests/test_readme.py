"""The README's set-up commands are what CI runs."""

import re

from .conftest import ROOT


def code_blocks(text):
    return re.findall(r"```\n(.*?)```", text, re.S)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = [b.strip() for b in code_blocks(readme)]
    main_cmd, test_cmd = blocks[0], blocks[1]
    assert "pytest" in test_cmd and "drummachine" in main_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()
