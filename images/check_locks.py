"""Check that every lock of the pins resolves, with hashes, for its image's Python on Linux x86_64 (glibc 2.28),
without that interpreter and without downloading a wheel.

    python images/check_locks.py [PINS_FILE ...]     (default: images/pins.toml and tests/standin/pins.toml)

For each `name==version` of a lock, the package index's file list (PEP 691 JSON of the simple API, one request
per project: file names, sha256, requires-python, yanked) must show:
- every `--hash` of the lock is the sha256 of one of that version's files (a stale or mistyped hash fails);
- one of the hashed files installs on the target: a wheel whose tags match CPython X.Y on
  manylinux_2_28_x86_64 or older, whose requires-python admits X.Y; else an sdist (reported: it builds at install).
pip with --require-hashes prefers the hashed files, so that is the file an image build gets.
Pins' flash_attn_sdist (name, version, sha256) is checked the same way. Not checked: that an sdist builds, the
files' bytes (the index's sha256 is trusted), anything outside the index (flash_attn_wheel is on GitHub).
Exit status 1 if any lock fails. The index is PIP_INDEX_URL or https://pypi.org/simple.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
import time
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging import tags
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PINS = (REPO / "images" / "pins.toml", REPO / "tests" / "standin" / "pins.toml")
GLIBC_MINOR = 28  # lock.sh's x86_64-manylinux_2_28
LEGACY_MANYLINUX = {"manylinux2014_x86_64": 17, "manylinux2010_x86_64": 12, "manylinux1_x86_64": 5}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass
class Pin:
    name: str
    version: str
    hashes: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Target:
    """One lock to check, for one image."""

    image: str
    lock: Path | None  # None: the pins' own entries (flash_attn_sdist)
    python: str
    pins: tuple[Pin, ...]

    @property
    def label(self) -> str:
        where = self.lock.relative_to(REPO) if self.lock and self.lock.is_relative_to(REPO) else self.lock or "pins"
        return f"[{self.image}] {where} (Python {self.python})"


def parse_lock(text: str) -> list[Pin]:
    """The `name==version --hash=...` entries of a pip/uv lock (comments and `-c` lines skipped)."""
    pins: list[Pin] = []
    for line in text.splitlines():
        line = line.strip()
        m = PIN.match(line)
        if m:
            pins.append(Pin(m.group(1), m.group(2)))
        if pins and not line.startswith("#"):
            pins[-1].hashes.update(HASH.findall(line))
    return pins


def supported_tags(python: str) -> set[tags.Tag]:
    version = tuple(int(p) for p in python.split("."))
    platforms = [f"manylinux_2_{m}_x86_64" for m in range(GLIBC_MINOR, 4, -1)]
    platforms += [p for p, minor in LEGACY_MANYLINUX.items() if minor <= GLIBC_MINOR]
    found = set(tags.cpython_tags(version, platforms=platforms))
    return found | set(tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms=platforms))


def targets(pins_file: Path) -> list[Target]:
    tables = tomllib.loads(pins_file.read_text())
    base = pins_file.parent.parent if pins_file.parent.name == "images" else pins_file.parent
    out = []
    for image, v in tables.items():
        for key in ("torch_lock", "requirements"):
            if v.get(key):
                lock = base / v[key]
                out.append(Target(image, lock, v["python"], tuple(parse_lock(lock.read_text()))))
        sdist = v.get("flash_attn_sdist")
        if sdist:
            out.append(Target(image, None, v["python"], (Pin(sdist["name"], sdist["version"], {sdist["sha256"]}),)))
    return out


def ssl_context() -> ssl.SSLContext:
    """Trusts the CA bundle pip is told to (behind a TLS-intercepting proxy), else the system's."""
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or os.environ.get("PIP_CERT") or None)


def fetch_files(name: str, index: str, context: ssl.SSLContext) -> list[dict]:
    url = f"{index.rstrip('/')}/{canonicalize_name(name)}/"
    req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    for attempt in range(3):  # a busy resolver or proxy fails now and then
        try:
            with urllib.request.urlopen(req, timeout=60, context=context) as r:
                return json.load(r)["files"]
        except urllib.error.URLError:
            if attempt == 2:
                raise
            time.sleep(2 * (attempt + 1))
    raise AssertionError("unreachable")


def file_version(filename: str) -> tuple[str, Version, frozenset[tags.Tag] | None] | None:
    """(project, version, wheel tags or None for an sdist), or None for another kind of file."""
    try:
        if filename.endswith(".whl"):
            name, version, _, wheel_tags = parse_wheel_filename(filename)
            return name, version, wheel_tags
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return name, version, None
    except ValueError:
        pass
    return None


def check_pin(pin: Pin, files: list[dict], python: str, supported: set[tags.Tag]) -> tuple[list[str], str]:
    """(problems, how it installs: 'wheel', 'sdist' or '')."""
    version = Version(pin.version)
    mine = [(f, parsed) for f in files if (parsed := file_version(f["filename"])) and parsed[1] == version]
    if not mine:
        return [f"{pin.name}=={pin.version}: no such version on the index"], ""
    by_hash = {f["hashes"].get("sha256"): (f, parsed) for f, parsed in mine}
    problems = [f"{pin.name}=={pin.version}: --hash=sha256:{h} is no file of this version" for h in sorted(pin.hashes - by_hash.keys())]
    if not pin.hashes:
        problems.append(f"{pin.name}=={pin.version}: no --hash (pip --require-hashes refuses it)")
    hashed = [by_hash[h] for h in pin.hashes if h in by_hash]
    admits = [(f, parsed) for f, parsed in hashed if not f.get("requires-python") or python in SpecifierSet(f["requires-python"])]
    if any(parsed[2] is not None and parsed[2] & supported for _, parsed in admits):
        return problems, "wheel"
    if any(parsed[2] is None for _, parsed in admits):
        return problems, "sdist"
    return problems + [f"{pin.name}=={pin.version}: no hashed wheel for CPython {python} manylinux_2_{GLIBC_MINOR}_x86_64, and no sdist"], ""


def check(pins_files: list[Path], index: str | None = None) -> tuple[list[str], list[str]]:
    """(report lines, problems) for every lock of the given pins files."""
    index = index or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    context = ssl_context()
    all_targets = [t for p in pins_files for t in targets(p)]
    names = sorted({canonicalize_name(p.name) for t in all_targets for p in t.pins})
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        listing = dict(zip(names, pool.map(lambda n: fetch_files(n, index, context), names)))
    report, problems = [f"{len(names)} projects listed by {index} in {time.monotonic() - start:.1f} s"], []
    for t in all_targets:
        supported = supported_tags(t.python)
        sdists = []
        for pin in t.pins:
            found, how = check_pin(pin, listing[canonicalize_name(pin.name)], t.python, supported)
            problems += [f"{t.label}: {p}" for p in found]
            if how == "sdist":
                sdists.append(f"{pin.name}=={pin.version}")
        listed = f" ({', '.join(sdists)})" if sdists else ""
        report.append(f"{t.label}: {len(t.pins)} pins, {len(t.pins) - len(sdists)} as wheels, {len(sdists)} from sdists{listed}")
    return report, problems


def main(argv: list[str]) -> int:
    report, problems = check([Path(a) for a in argv] or list(DEFAULT_PINS))
    print("\n".join(report))
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
