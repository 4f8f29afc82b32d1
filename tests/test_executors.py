"""The Executor protocol: both executors offer all of it, with its signatures, and nothing outside
runner/executors/ asks which one it has (instances are checked against the protocol in test_plan_record.py
and test_remote.py, where a real engine and SSH hosts exist)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from runner.executors import Executor
from runner.executors.local import LocalDocker
from runner.executors.remote import RemoteDocker
from runner.executors.slurm import SlurmExecutor

RUNNER = Path(__file__).resolve().parent.parent / "runner"
METHODS = sorted(n for n, v in vars(Executor).items() if inspect.isfunction(v) and not n.startswith("_"))


@pytest.mark.parametrize("cls", [LocalDocker, RemoteDocker, SlurmExecutor])
@pytest.mark.parametrize("name", METHODS)
def test_each_executor_has_every_method_of_the_protocol(cls, name):
    want = list(inspect.signature(getattr(Executor, name)).parameters)
    have = list(inspect.signature(getattr(cls, name)).parameters)
    if isinstance(inspect.getattr_static(cls, name), staticmethod):
        have = ["self", *have]
    assert have == want, f"{cls.__name__}.{name}{have} differs from Executor.{name}{want}"


def test_no_module_outside_the_executors_asks_whether_a_host_is_local():
    asks = re.compile(r"""\bhost\s*[!=]=\s*["']local["']""")
    found = [f"{p.relative_to(RUNNER)}:{n}" for p in RUNNER.rglob("*.py") if "executors" not in p.parts
             for n, line in enumerate(p.read_text().splitlines(), 1) if asks.search(line)]
    assert not found, f"use a property or method of the Executor instead: {found}"
    assert len(METHODS) >= 15
