"""A Shell that answers from recorded command outputs, so checks run here as they would on a GPU host."""

from __future__ import annotations

from pathlib import Path

from runner.shell import Result

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
SMI_FILES = {("-q", "-x"): "q.xml", ("topo", "-m"): "topo.txt", ("topo", "-p2p", "r"): "p2p.txt"}


class FakeShell:
    def __init__(self, name: str = "gpuhost", card: str | None = None, answers: dict[tuple[str, ...], Result] | None = None):
        self.name, self.card, self.answers, self.calls = name, card, answers or {}, []

    def run(self, argv: list[str], timeout: float = 60) -> Result:
        self.calls.append(argv)
        if tuple(argv) in self.answers:
            return self.answers[tuple(argv)]
        if argv[0] == "nvidia-smi" and self.card:
            suffix = "query.csv" if argv[1].startswith("--query-gpu") else SMI_FILES.get(tuple(argv[1:]))
            path = FIXTURES / f"{self.card}-{suffix}"
            if path.exists():
                return Result(0, path.read_text(), "")
            return Result(6, "", "not recorded")
        return Result(127, "", f"{argv[0]}: command not found")
