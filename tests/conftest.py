from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import modelfixtures

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A folder laid out like the repository's examples: models/ beside examples/ with data/."""
    modelfixtures.models_root(tmp_path / "models")
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("outputs", "cache"))
    return tmp_path


def write_job(folder: Path, text: str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the `runner` command in-process; returns (exit code, stdout, stderr)."""
    from runner import cli as runner_cli

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["runner", *map(str, args)])
        monkeypatch.setenv("COLUMNS", "400")  # one error paragraph per line, whatever the terminal
        try:
            runner_cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
