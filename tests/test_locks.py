"""Every lock of the images resolves, with hashes, for its image's Python on manylinux_2_28 x86_64 (images/check_locks.py).

Asks the package index's simple API (one JSON listing per project, no wheel downloaded, no target interpreter).
Needs PyPI: skipped when it cannot be reached, except in CI (RUNNER_REQUIRE_DOCKER=1, whose image builds need
PyPI as well).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
import urllib.error
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_locks", REPO / "images" / "check_locks.py")
check_locks = sys.modules["check_locks"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up there
_spec.loader.exec_module(check_locks)


@pytest.fixture(scope="module")
def index() -> str:
    url = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    try:
        check_locks.fetch_files("pip", url, check_locks.ssl_context())
    except (urllib.error.URLError, OSError) as e:
        if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
            pytest.fail(f"CI but the package index {url} is unreachable: {e}")
        pytest.skip(f"the package index {url} is unreachable here ({e})")
    return url


def test_every_lock_of_the_images_resolves_with_hashes_for_its_python_and_platform(index):
    start = time.monotonic()
    report, problems = check_locks.check(list(check_locks.DEFAULT_PINS), index)
    print("\n".join(report), f"\nchecked in {time.monotonic() - start:.1f} s")
    assert problems == []
    locks = {line.split(":")[0] for line in report[1:]}
    assert {"[diffpipe] images/diffpipe/requirements.lock (Python 3.12)", "[musubi] images/musubi/torch.lock (Python 3.10)",
            "[musubi-blackwell] images/musubi/requirements-blackwell.lock (Python 3.12)"} <= locks
    diffpipe = next(line for line in report if line.startswith("[diffpipe] images/diffpipe/requirements.lock"))
    assert diffpipe.endswith("3 from sdists (antlr4-python3-runtime==4.9.3, deepspeed==0.18.4, iopath==0.1.10)"), "images/README.md lists these"
    assert all(line.endswith(" 0 from sdists") for line in report if line.startswith("[musubi")), "musubi's locks hold wheels only"


def _lock_line(lock: Path, name: str) -> str:
    """One entry of a lock, `name==version --hash=... --hash=...`, as a single line."""
    block = re.search(rf"^{re.escape(name)}==.*?(?=^\S)", lock.read_text(), re.S | re.M).group(0)
    return " ".join(part.strip(" \\") for part in block.splitlines() if not part.strip().startswith("#"))


def test_a_wrong_hash_a_missing_version_and_a_python_without_wheels_each_fail(index, tmp_path):
    diffpipe_lock = REPO / "images" / "diffpipe" / "requirements.lock"
    numpy = _lock_line(diffpipe_lock, "numpy")  # numpy 2.5.x: wheels for CPython >= 3.12 only
    bnb = _lock_line(diffpipe_lock, "bitsandbytes")
    first_hash = re.search(r"[0-9a-f]{64}", bnb).group(0)
    wrong = bnb.replace(first_hash, first_hash[::-1])
    (tmp_path / "requirements.lock").write_text(f"{numpy}\n{wrong}\ntoml==0.0.0 --hash=sha256:{'0' * 64}\n")
    (tmp_path / "pins.toml").write_text('[musubi]\npython = "3.10"\nrequirements = "requirements.lock"\n')
    _, problems = check_locks.check([tmp_path / "pins.toml"], index)
    assert any("numpy==" in p and "no hashed wheel for CPython 3.10" in p for p in problems), problems
    assert any(f"bitsandbytes==0.49.2: --hash=sha256:{first_hash[::-1]} is no file of this version" in p for p in problems), problems
    assert any("toml==0.0.0: no such version on the index" in p for p in problems), problems
    assert len(problems) == 3, problems


def test_lock_parsing_and_target_tags():
    pins = check_locks.parse_lock("-c torch.lock\nav==16.0.1 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64
                                  + "\n    # via -r requirements.in\nimageio[ffmpeg]==2.37.0 --hash=sha256:" + "c" * 64 + "\n")
    assert [(p.name, p.version, len(p.hashes)) for p in pins] == [("av", "16.0.1", 2), ("imageio", "2.37.0", 1)]
    supported = {str(t) for t in check_locks.supported_tags("3.12")}
    assert {"cp312-cp312-manylinux_2_28_x86_64", "cp312-abi3-manylinux2014_x86_64", "py3-none-manylinux_2_24_x86_64", "py3-none-any"} <= supported
    assert not {"cp312-cp312-manylinux_2_34_x86_64", "cp312-cp312-linux_x86_64", "cp311-cp311-manylinux_2_28_x86_64"} & supported
