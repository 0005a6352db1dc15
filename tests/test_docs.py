"""The documentation keeps its promises: README opens with the two set-up commands and stays short,
its links resolve, the store reference is the schema, the site builds with no warning, and the
example outputs are what the current code prints."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from egresslens.schema import markdown_reference

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"


def test_readme_opens_with_the_demo_and_test_commands():
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert README.index("```sh") < README.index("##")


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_readable_in_five_minutes():
    assert len(README.splitlines()) <= 250


def test_every_relative_link_in_the_readme_and_the_docs_resolves():
    pages = [ROOT / "README.md", *DOCS.rglob("*.md")]
    missing = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert missing == []


def test_store_reference_matches_the_schema():
    text = (DOCS / "store.md").read_text(encoding="utf-8")
    block = text.split("<!-- tables:begin", 1)[1].split("-->", 1)[1].split("<!-- tables:end -->", 1)[0]
    assert block.strip() == markdown_reference().strip()


def test_the_site_builds_offline_with_no_warning(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr
    built = (tmp_path / "site" / "examples" / "index.html").read_text(encoding="utf-8")
    assert "egresslens-proposed" in built  # the snippets were included, not left as markers


def test_committed_examples_are_what_the_code_prints_now(tmp_path):
    spec = importlib.util.spec_from_file_location("generate_examples", DOCS / "examples" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.generate(tmp_path)
    assert fresh, "the generator wrote nothing"
    stale = [p.name for p in fresh if p.read_bytes() != (DOCS / "examples" / p.name).read_bytes()]
    assert stale == [], f"run `make docs-examples` and commit: {stale} differ from the current output"


def test_every_image_the_docs_show_exists_and_every_image_is_shown():
    """`make screenshots` writes docs/images; the README and the docs show what is there, and nothing stale."""
    docs = ROOT / "docs"
    texts = {p: p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *docs.glob("*.md")]}
    shown = set()
    for path, text in texts.items():
        for ref in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text):
            image = (path.parent / ref).resolve()
            assert image.exists(), f"{path.name} shows {ref}, which is not there"
            shown.add(image)
    assert {p.resolve() for p in (docs / "images").glob("*.png")} == shown
