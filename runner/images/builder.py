"""Trainer images: pins, content-addressed tags, builds through the Docker SDK, and listing.

Every pin lives in images/pins.toml. The tag of an image is a hash of the pins, the Dockerfile and the
files copied into it, so the same inputs give the same tag on every machine and a changed pin a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import os
import secrets
import shutil
import sys
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from runner import inputs, waits
from runner.errors import UserError
from runner.plan import is_secret
from runner.spec import Trainer

TRAINERS = tuple(t.value for t in Trainer)
IMAGES = (*TRAINERS, "caption")  # caption: runner's captioner (Dockerfile.caption, runner caption)
LABEL = "io.runner"
CONTEXT_FILES = ("entrypoint.sh", "pip.sh", "run_plan.py", "install-system.sh", "fetch-trainer.sh", "add-user.sh", "fetch_tokenizers.py", "check_imports.py")


def source_root() -> Path:
    """Where the Dockerfiles and images/ are: the checkout, or the data files of an installed package."""
    checkout = Path(__file__).resolve().parents[2]  # runner/images/builder.py → the checkout
    if (checkout / "Dockerfile.musubi").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "runner"


def default_pins_file() -> Path:
    return source_root() / "images" / "pins.toml"


@dataclass(frozen=True)
class Pins:
    """One image's pins: a [trainer] or [trainer-variant] table of a pins file."""

    trainer: str
    variant: str
    values: dict
    base: Path  # folder the pins file's relative paths start from

    @property
    def name(self) -> str:
        return self.trainer if self.variant == "default" else f"{self.trainer}-{self.variant}"

    def path(self, key: str) -> Path | None:
        v = self.values.get(key)
        return (self.base / v) if v else None

    @property
    def repository(self) -> str:
        return f"runner-{self.name}"


def load_pins(trainer: str, variant: str = "default", pins_file: Path | None = None) -> Pins:
    if trainer not in IMAGES:
        raise UserError("trainer", f"{trainer!r} is not an image runner knows.", f"use one of {', '.join(IMAGES)}.")
    pins_file = pins_file or default_pins_file()
    try:
        tables = tomllib.loads(inputs.read_text(pins_file, "pins file"))  # a regular UTF-8 file of at most 1 MiB
    except tomllib.TOMLDecodeError as e:
        raise UserError(str(pins_file), f"cannot be read as a pins file ({e}).", "check the path given by --pins or RUNNER_PINS, or restore images/pins.toml from the repository.") from e
    key = trainer if variant == "default" else f"{trainer}-{variant}"
    if key not in tables:
        variants = sorted(k.split("-", 1)[1] for k in tables if k.startswith(f"{trainer}-"))
        raise UserError(str(pins_file), f"has no [{key}] table.", f"use a variant it defines: default, {', '.join(variants) or '(none)'}.")
    base = pins_file.parent.parent if pins_file.parent.name == "images" else pins_file.parent
    return Pins(trainer, variant, tables[key], base)


def dockerfile(trainer: str) -> Path:
    return source_root() / f"Dockerfile.{trainer}"


def _context_entries(pins: Pins, ca_bundle: Path | None) -> Iterator[tuple[str, Path | bytes]]:
    """(name in the build context, file or bytes) for everything the Dockerfile copies."""
    images = source_root() / "images"
    yield "Dockerfile", dockerfile(pins.trainer)
    for name in CONTEXT_FILES:
        yield f"images/{name}", images / name
    for key, name in (("torch_lock", "torch_lock"), ("requirements", "requirements_lock")):
        p = pins.path(key)
        yield f"images/{name}.txt", p if p else b""
    yield "images/ca/runner-extra.crt", ca_bundle.read_bytes() if ca_bundle else b""
    src = pins.path("trainer_src")
    if src:
        for f in sorted(src.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                yield f"trainer-src/{f.relative_to(src).as_posix()}", f
    else:
        yield "trainer-src/.keep", b""


def build_context(pins: Pins, ca_bundle: Path | None) -> tuple[bytes, str]:
    """The build context as a tar, and a content hash of it and the pins (the image tag)."""
    digest = hashlib.sha256(repr(sorted(pins.values.items())).encode())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, src in _context_entries(pins, ca_bundle):
            data = src if isinstance(src, bytes) else src.read_bytes()
            mode = 0o755 if isinstance(src, Path) and os.access(src, os.X_OK) else 0o644
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
            digest.update(name.encode() + b"\0" + data)
    return buf.getvalue(), digest.hexdigest()[:12]


def build_args(pins: Pins, pip_index_url: str | None, index_from: str = "") -> dict[str, str]:
    """index_from: where the build reads a pip index URL that holds credentials (index_for_build), given instead of it."""
    v = pins.values
    args = {
        "BASE_IMAGE": v["base_image"],
        "TRAINER_GIT_URL": v.get("git_url", ""),
        "TRAINER_COMMIT": v.get("commit", ""),
        "TRAINER_SUBMODULES": " ".join(f"{path}={sha}" for path, sha in v.get("submodules", {}).items()),
        "TOKENIZERS": " ".join(f"{t['repo']}:{t['subfolder']}@{t.get('revision', 'main')}" for t in v.get("tokenizers", [])),
    }
    if "import_check" in v:  # else the Dockerfile's own lists
        args["IMPORT_CHECK"] = " ".join(_names(pins, "import_check"))
    if "bnb_config_keys" in v:
        args["BNB_CONFIG_KEYS"] = ",".join(_names(pins, "bnb_config_keys"))
    wheel = v.get("flash_attn_wheel")
    if wheel:
        sdist = v.get("flash_attn_sdist") or {}
        if not (wheel.get("sha256") and {"name", "version", "sha256"} <= sdist.keys()):
            raise UserError(f"pins [{pins.name}]", "has a flash_attn_wheel without its sha256, or no complete flash_attn_sdist: the wheel or its source fallback would not be hash-checked.",
                            "give flash_attn_wheel = { url, sha256 } and flash_attn_sdist = { name, version, sha256 } as in images/pins.toml.")
        args["FLASH_ATTN_WHEEL"] = wheel["url"]
        args["FLASH_ATTN_SHA256"] = wheel["sha256"]
        args["FLASH_ATTN_SDIST"] = f"{sdist['name']}=={sdist['version']} --hash=sha256:{sdist['sha256']}"
    if index_from:
        args["PIP_INDEX_FROM"] = index_from
    elif pip_index_url:
        args["PIP_INDEX_URL"] = pip_index_url
    return args


@contextlib.contextmanager
def index_for_build(pip_index_url: str | None) -> Iterator[str]:
    """A pip index URL with credentials, served to the build at a one-time address on 127.0.0.1 (builds use the
    host's network) while the build runs, so it is no build arg: `docker history` keeps those. images/pip.sh reads
    it there. Yields that address, or "" when the URL holds no credentials."""
    if not pip_index_url or not is_secret("PIP_INDEX_URL", pip_index_url):
        yield ""
        return
    path = "/" + secrets.token_urlsafe(32)
    body = pip_index_url.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != path:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # nothing about it on the console

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{path}"
    finally:
        server.shutdown()
        server.server_close()


def _names(pins: Pins, key: str) -> list[str]:
    names = pins.values[key]
    if not isinstance(names, list) or not all(isinstance(n, str) and n and " " not in n for n in names):
        raise UserError(f"pins [{pins.name}] {key}", f"is {names!r}, not a list of names.", f'write it as a TOML list, e.g. {key} = ["torch", "cv2"].')
    return names


def labels(pins: Pins, tag: str) -> dict[str, str]:
    out = {f"{LABEL}.trainer": pins.trainer, f"{LABEL}.variant": pins.variant, f"{LABEL}.tag": tag}
    for k, v in sorted(pins.values.items()):
        if isinstance(v, (str, int, float)):
            out[f"{LABEL}.pins.{k}"] = str(v)
        elif isinstance(v, dict) and k == "submodules":
            out.update({f"{LABEL}.pins.submodule.{p}": sha for p, sha in v.items()})
    out["org.opencontainers.image.source"] = pins.values.get("git_url", "")
    out["org.opencontainers.image.revision"] = pins.values.get("commit", "")
    return out


def image_ref(pins: Pins, ca_bundle: Path | None) -> str:
    return f"{pins.repository}:{build_context(pins, ca_bundle)[1]}"


BuildLog = Callable[[str], None]
DEFAULT_BUILD_DISK_GB = 40


def check_build_disk(client, pins: Pins) -> None:
    """Refuse a build the engine's disk cannot hold, before hours of downloads (local engines only)."""
    root = client.info().get("DockerRootDir", "/var/lib/docker")
    need = float(pins.values.get("build_disk_gb", DEFAULT_BUILD_DISK_GB))
    try:
        free = shutil.disk_usage(root).free / 2**30
    except OSError:
        return  # the engine's disk is not visible from here (remote engine)
    if free < need:
        raise UserError(
            f"disk of {root}",
            f"has {free:.1f} GiB free; building the {pins.name} image needs about {need:.0f} GiB.",
            "free space (`docker system prune`), or move Docker's data-root to a larger disk.",
        )


def build(client, pins: Pins, ca_bundle: Path | None, pip_index_url: str | None, log: BuildLog) -> str:
    """Build the image for `pins` unless an image with its tag exists; returns the image reference. Either way
    `<repository>:latest` (what compose runs) becomes that image: the one of the pins and CA bundle asked for last."""
    context, tag = build_context(pins, ca_bundle)
    ref = f"{pins.repository}:{tag}"
    with one_build_at_a_time(client, ref, log):
        if find_image(client, ref):
            log(f"{ref} is up to date")
        else:
            _build(client, pins, context, ref, tag, pip_index_url, log)
        client.api.tag(ref, pins.repository, "latest")
    return ref


def one_build_at_a_time(client, ref: str, log: BuildLog):
    """Hold this user's lock on building `ref` on this engine: a second `runner build` of the same image (another
    terminal, CI building ahead of its tests) waits for the first, then finds the image built."""
    engine = client.info().get("ID", "engine").replace(":", "")[:12]
    return waits.one_at_a_time("builds", f"{engine}-{ref}", lambda: log(f"waiting for another build of {ref} on this engine"))


def _build(client, pins: Pins, context: bytes, ref: str, tag: str, pip_index_url: str | None, log: BuildLog) -> None:
    with index_for_build(pip_index_url) as index_from:
        stream = client.api.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            tag=ref,
            buildargs=build_args(pins, pip_index_url, index_from),
            labels=labels(pins, tag),
            network_mode="host",
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                raise UserError(
                    f"image {ref}",
                    f"the build failed: {chunk['error'].strip()}",
                    "read the build log above; behind a TLS-intercepting proxy set ca_bundle (RUNNER_CA_BUNDLE).",
                )
            text = chunk.get("stream", "")
            for line in text.splitlines():
                if line.strip():
                    log(line)


def find_image(client, ref: str):
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def list_images(client) -> list[dict]:
    rows = []
    for img in client.images.list(filters={"label": f"{LABEL}.trainer"}):
        lab = img.labels or {}
        pins = {k.removeprefix(f"{LABEL}.pins."): v for k, v in lab.items() if k.startswith(f"{LABEL}.pins.")}
        rows.append({"id": img.short_id, "tags": img.tags, "trainer": lab.get(f"{LABEL}.trainer"), "variant": lab.get(f"{LABEL}.variant"), "size": img.attrs.get("Size", 0), "pins": pins})
    return rows
