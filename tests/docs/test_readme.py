"""The README stays true: its commands, its configuration table and its links."""

from __future__ import annotations

import re
from pathlib import Path

from trinity_platform.config import settings_markdown

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_configuration_table_is_the_one_the_services_read() -> None:
    assert settings_markdown() in README


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    assert "make test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)


def test_every_make_target_named_in_the_readme_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z-]*)", README))
    assert named, "the README names no make target"
    assert named <= targets, named - targets


def test_relative_links_point_at_files_that_exist() -> None:
    links = re.findall(r"\]\(([^)#:]+)\)", README)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_process_files_shown_in_the_readme_are_valid() -> None:
    from trinity_process_model.authoring import parse_process
    from trinity_process_model.validation import validate

    blocks = re.findall(r"```yaml\n(.*?)```", README, re.DOTALL)
    assert blocks, "the README shows no process file"
    for block in blocks:
        assert validate(parse_process(block)) == [], block
