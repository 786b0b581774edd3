"""`make lint`'s contract check: `buf breaking` against the main branch, skipped with a
message where the clone has no main branch. Run here in throw-away repositories."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_support import BIN, ROOT


def breaking_command() -> str:
    """The lint recipe line that runs buf breaking, as make would hand it to the shell."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    lines: list[str] = []
    for raw in recipe.splitlines()[1:]:
        line = raw.strip()
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1] + " " + line
        else:
            lines.append(line)
    (command,) = [line for line in lines if "buf breaking" in line]
    return command.lstrip("@").replace("$(BIN)", str(BIN)).replace("$$", "$")


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with this project's buf module committed on main."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "proto", repo / "proto")
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "contracts")
    return repo


def run(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", breaking_command()], cwd=repo, capture_output=True, text=True
    )


def test_unchanged_contracts_pass(repo: Path) -> None:
    result = run(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "buf breaking --against" in result.stdout


def test_a_breaking_change_fails(repo: Path) -> None:
    git(repo, "checkout", "-qb", "feature")
    proto = repo / "proto/trinity/process/definition/v1/definition_service.proto"
    text = proto.read_text()
    assert "rpc ArchiveDefinition(" in text
    # The whole RPC, its options block included (a body of its own since RPCs declare
    # their permission).
    removed = re.sub(
        r"rpc ArchiveDefinition\(.*?\)\s*returns\s*\(.*?\)\s*(\{.*?\n  \}|;)",
        "",
        text,
        count=1,
        flags=re.S,
    )
    assert "ArchiveDefinition(" not in removed
    proto.write_text(removed)
    result = run(repo)
    assert result.returncode != 0
    assert "ArchiveDefinition" in result.stdout + result.stderr


def test_a_clone_without_main_skips_with_a_message(repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "detached"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "checkout", "-q", "--detach")
    git(clone, "branch", "-D", "main")
    result = run(clone)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" in result.stdout


def test_make_check_gen_says_only_what_matters() -> None:
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "check-gen"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr) == "generated code is up to date\n"
