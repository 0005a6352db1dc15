"""README.md keeps its promises: the two set-up commands first, the store reference in step with the schema."""

from __future__ import annotations

import re
from pathlib import Path

from egresslens.schema import markdown_reference

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_demo_and_test_commands():
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert README.index("```sh") < README.index("##")


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_store_reference_matches_the_schema():
    block = README.split("<!-- tables:begin", 1)[1].split("-->", 1)[1].split("<!-- tables:end -->", 1)[0]
    assert block.strip() == markdown_reference().strip()
