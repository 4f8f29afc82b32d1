"""Bad input files, generated for every kind runner reads from disk: videos, images, captions, .safetensors and .pth
model files, dataset folders and models.root.

Each kind gets the ways a file goes wrong (cut short, empty, binary garbage, a wrong encoding, the wrong kind of
entry, a huge header, a FIFO, a symlink that loops, dangles or leaves its folder), and each case asserts what runner
promises: the exit code (2 for a mistake, 1 for a `dataset check` verdict), a message naming the file (with the
frame or byte where it applies), the problem and a fix, no traceback, nothing written or deleted anywhere under the
test's folder, and an answer within CASE_SECONDS (a FIFO opened for reading would block for ever).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from runner.data.synth import write_caption, write_image, write_video
from tests import modelfixtures

CASE_SECONDS = 30
GARBAGE = random.Random(12).randbytes(4096)
DIT = modelfixtures.COMFY / "diffusion_models" / "wan2.1_t2v_1.3B_bf16.safetensors"
T5 = Path("Wan2.1-T2V-1.3B") / "models_t5_umt5-xxl-enc-bf16.pth"
JOB = """\
name: bad-input
trainer: musubi
task: t2v-1.3B
models:
  root: ../models
  preset: t2v-1.3B
datasets:
  - path: ../data/{folder}
    frames: [33]
"""


# --- the workspace: a models root, a folder of clips and one of stills, a job for each ----------------------------


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Path:
    """Media encoded once per module; each test copies them."""
    d = tmp_path_factory.mktemp("seed")
    (d / "clips").mkdir()
    (d / "stills").mkdir()
    for name in ("clip1.mp4", "clip2.mp4"):
        write_caption(write_video(d / "clips" / name, 33, 16))
    write_caption(write_image(d / "stills" / "still.png"))
    write_caption(write_image(d / "stills" / "photo.jpg"))
    return d


@pytest.fixture
def ws(tmp_path: Path, seed: Path) -> Path:
    modelfixtures.models_root(tmp_path / "models")
    shutil.copytree(seed, tmp_path / "data")
    (tmp_path / "jobs").mkdir()
    for folder in ("clips", "stills"):
        (tmp_path / "jobs" / f"{folder}.yaml").write_text(JOB.format(folder=folder))
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under root, links not followed: kind, size, mtime and link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, os.readlink(p) if p.is_symlink() else None)
    return out


@contextmanager
def time_limit(seconds: int):
    def expired(*_):
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(cli, ws: Path, *args) -> tuple[int, str, str]:
    """The command, timed, with the tree under the test's folder compared before and after."""
    before = tree(ws)
    with time_limit(CASE_SECONDS):
        code, out, err = cli(*args)
    assert "Traceback" not in out + err, out + err
    assert tree(ws) == before, "the command changed files"
    return code, out, err


def refused(cli, ws: Path, args: list, pieces: list[str]) -> str:
    code, out, err = run(cli, ws, *args)
    assert code == 2, (code, out, err)
    assert "Fix:" in err, err
    for piece in pieces:
        assert piece in err, f"{piece!r} not in {err!r}"
    return err


def verdicts(cli, ws: Path, folder: Path, name: str) -> dict:
    """`dataset check --json` on folder: it exits 1 and one trainer drops or fails on `name`; its verdicts."""
    code, out, err = run(cli, ws, "dataset", "check", folder, "--json")
    assert code == 1, (code, out, err)
    report = json.loads(out)
    entry = next(f for f in report["files"] if f["name"] == name)
    assert {v["level"] for v in entry["verdicts"].values()} & {"drop", "error"}, entry
    return entry["verdicts"]


# --- the ways a file goes wrong ---------------------------------------------------------------------------------

Damage = Callable[[Path, Path], None]  # (the file, the test's folder) → the file damaged in place


def _cut(path: Path, _: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path, _: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path, _: Path) -> None:
    path.write_bytes(b"\x00" + GARBAGE)  # a leading NUL: neither a zip, a pickle, a picture nor text


def _latin1(path: Path, _: Path) -> None:
    path.write_bytes("une vidéo, café crème".encode("latin-1"))


def _folder(path: Path, _: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("a folder where a file should be")


def _fifo(path: Path, _: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _loop(path: Path, _: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)


def _dangling(path: Path, _: Path) -> None:
    path.unlink()
    path.symlink_to(f"gone-{path.name}")


def _outside(path: Path, ws: Path) -> None:
    moved = ws / "elsewhere" / path.name
    path.rename(moved)
    path.symlink_to(moved)


COMMON: dict[str, Damage] = {"empty": _empty, "garbage": _garbage, "folder": _folder, "fifo": _fifo,
                             "loop": _loop, "dangling": _dangling, "outside": _outside}


# --- media: videos and images in a dataset folder ---------------------------------------------------------------


def _cut_with_header(path: Path, _: Path) -> None:
    """An MP4 with its index first (faststart), cut in half: the header still claims every frame."""
    whole = path.with_name("whole.tmp")
    with av.open(str(path)) as src, av.open(str(whole), "w", format="mp4", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: len(data) // 2])


def _huge_box(path: Path, _: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0:4] = struct.pack(">I", 0xFFFFFFF0)  # the first box claims 4 GiB
    path.write_bytes(bytes(data))


MEDIA_DAMAGE = {**COMMON, "latin1": _latin1}
MEDIA_PROBLEMS = {
    "empty": "cannot be",
    "garbage": "cannot be",
    "latin1": "cannot be",
    "folder": "is a folder, not a file",
    "fifo": "is a FIFO, not a regular file",
    "loop": "is a symlink loop",
    "dangling": "is a dangling symlink",
    "outside": "outside the dataset folder",
}
MEDIA_CASES = [
    ("clips", "clip1.mp4", "cut", _cut_with_header, "is cut short: it stops at frame"),
    ("clips", "clip2.mp4", "cut-index", _cut, "cannot be"),  # the index at the end is gone
    ("clips", "clip1.mp4", "huge", _huge_box, "cannot be"),
    ("stills", "still.png", "cut", _cut, "cannot be"),
    ("stills", "photo.jpg", "cut", _cut, "cannot be"),
    ("stills", "photo.jpg", "cut-tail", lambda p, _: p.write_bytes(p.read_bytes()[:-64]), "the JPEG has no end-of-image marker"),
    *[(folder, name, d, MEDIA_DAMAGE[d], p) for folder, name in (("clips", "clip1.mp4"), ("stills", "still.png")) for d, p in MEDIA_PROBLEMS.items()],
]


@pytest.mark.parametrize("folder,name,damage,problem", [(f, n, fn, p) for f, n, _, fn, p in MEDIA_CASES],
                         ids=[f"{n}-{d}" for _, n, d, _, _ in MEDIA_CASES])
def test_bad_media_file(cli, ws, folder, name, damage, problem):
    damage(ws / "data" / folder / name, ws)
    err = refused(cli, ws, ["validate", ws / "jobs" / f"{folder}.yaml"], [f"datasets[0].path: {ws / 'data' / folder / name}", problem])
    assert "musubi:" in err
    texts = " ".join(v["text"] for v in verdicts(cli, ws, ws / "data" / folder, name).values())
    assert problem in texts


def test_cut_video_names_the_frame(cli, ws):
    _cut_with_header(ws / "data" / "clips" / "clip1.mp4", ws)
    texts = [v["text"] for v in verdicts(cli, ws, ws / "data" / "clips", "clip1.mp4").values()]
    assert any("it stops at frame" in t and "of the 33 its header claims" in t for t in texts), texts


# --- captions ---------------------------------------------------------------------------------------------------


def _cut_in_a_character(path: Path, _: Path) -> None:
    path.write_bytes("un café".encode()[:-1])  # the é's second byte is gone


def _utf16(path: Path, _: Path) -> None:
    path.write_text("a clip of a ball", encoding="utf-16")


def _huge_caption(path: Path, _: Path) -> None:
    path.write_bytes(b"a ball " * (2**21 // 7))


CAPTION_CASES = {
    "cut": (_cut_in_a_character, "is not UTF-8: byte 6 is 0xc3"),
    "garbage": (_garbage, "is not UTF-8: byte"),
    "latin1": (_latin1, "is not UTF-8: byte 7 is 0xe9"),
    "utf16": (_utf16, "is not UTF-8: byte 0 is 0xff"),
    "huge": (_huge_caption, "is over 1 MiB"),
    "folder": (_folder, "is a folder, not a file"),
    "fifo": (_fifo, "is a FIFO, not a regular file"),
    "loop": (_loop, "is a symlink loop"),
    "dangling": (_dangling, "is a dangling symlink"),
    "outside": (_outside, "outside the dataset folder"),
}


@pytest.mark.parametrize("damage", list(CAPTION_CASES))
def test_bad_caption(cli, ws, damage):
    fn, problem = CAPTION_CASES[damage]
    fn(ws / "data" / "clips" / "clip1.txt", ws)
    refused(cli, ws, ["validate", ws / "jobs" / "clips.yaml"], ["clip1.mp4", "caption clip1.txt", problem])
    texts = " ".join(v["text"] for v in verdicts(cli, ws, ws / "data" / "clips", "clip1.mp4").values())
    assert "caption clip1.txt" in texts and problem in texts


def test_empty_caption_trains_unconditioned_with_a_warning(cli, ws):
    """Not a mistake: an empty caption trains the clip unconditioned, which both trainers do on purpose."""
    _empty(ws / "data" / "clips" / "clip1.txt", ws)
    code, out, err = run(cli, ws, "dataset", "check", ws / "data" / "clips", "--json")
    assert code == 0, (out, err)
    entry = next(f for f in json.loads(out)["files"] if f["name"] == "clip1.mp4")
    assert all("empty caption" in v["text"] and v["level"] == "warn" for v in entry["verdicts"].values())


# --- model files: the DiT (.safetensors) and the T5 (.pth) ------------------------------------------------------


def _header(path: Path, header: object, raw: bytes | None = None) -> None:
    body = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body)


def _tensor(**entry) -> dict:
    return {"patch_embedding.weight": {"dtype": "BF16", "shape": [1536, 16, 1, 2, 2], "data_offsets": [0, 0], **entry}}


SAFETENSORS_CASES = {
    "cut": (_cut, "runs past the end of the file"),
    "data-cut": (lambda p, _: _header(p, _tensor(data_offsets=[0, 4096])), "past the end of the file: the file is cut short"),
    "empty": (_empty, "the file is empty"),
    "short": (lambda p, _: p.write_bytes(b"\x10\x00"), "shorter than a safetensors header"),
    "garbage": (_garbage, "cannot be read as .safetensors"),
    "latin1": (lambda p, _: _header(p, None, '{"caf\xe9": 1}'.encode("latin-1")), "is not UTF-8 text (byte 13)"),
    "not-json": (lambda p, _: _header(p, None, b"{nope"), "is not JSON"),
    "json-list": (lambda p, _: _header(p, [1, 2]), "a JSON list, not an object"),
    "json-string": (lambda p, _: _header(p, "weights"), "a JSON str, not an object"),
    "entry-not-object": (lambda p, _: _header(p, {"patch_embedding.weight": 7}), "is not described by a JSON object"),
    "dtype": (lambda p, _: _header(p, _tensor(dtype=["BF16"])), "has no known dtype"),
    "dtype-name": (lambda p, _: _header(p, _tensor(dtype="BANANA")), "has no known dtype"),
    "shape": (lambda p, _: _header(p, _tensor(shape="1536x16")), "has no valid shape"),
    "shape-negative": (lambda p, _: _header(p, _tensor(shape=[-1, 16])), "has no valid shape"),
    "offsets": (lambda p, _: _header(p, _tensor(data_offsets=[8, 0])), "has no valid data_offsets"),
    "metadata": (lambda p, _: _header(p, {"__metadata__": [1]}), "its __metadata__ is not a JSON object"),
    "huge-header": (lambda p, _: p.write_bytes(struct.pack("<Q", 2**40) + b"{}"), "header length (1099511627776) is implausible"),
    "folder": (_folder, "is a folder, but models.dit must be a file"),
    "fifo": (_fifo, "is a FIFO or device, but models.dit must be a file"),
    "loop": (_loop, "is a symlink that loops or points nowhere"),
    "dangling": (_dangling, "is a symlink that loops or points nowhere"),
    "outside": (_outside, "is a symlink out of models.root"),
}


@pytest.mark.parametrize("damage", list(SAFETENSORS_CASES))
def test_bad_safetensors_dit(cli, ws, damage):
    fn, problem = SAFETENSORS_CASES[damage]
    fn(ws / "models" / DIT, ws)
    refused(cli, ws, ["validate", ws / "jobs" / "clips.yaml"], [f"models.dit: {ws / 'models' / DIT}", problem])


def test_a_dit_patch_embedding_without_a_shape_is_no_crash(cli, ws):
    """A tensor with shape [] is valid safetensors (a scalar); it just tells nothing about the model's size."""
    _header(ws / "models" / DIT, _tensor(shape=[]))
    code, out, err = run(cli, ws, "validate", ws / "jobs" / "clips.yaml")
    assert code == 0, out + err


PTH_CASES = {
    "cut": (_cut, "without its end record: the file is cut short"),
    "empty": (_empty, "the file is empty"),
    "garbage": (_garbage, "neither torch.save's zip archive nor a pickle"),
    "latin1": (_latin1, "neither torch.save's zip archive nor a pickle"),
    "folder": (_folder, "is a folder, but models.t5 must be a file"),
    "fifo": (_fifo, "is a FIFO or device, but models.t5 must be a file"),
    "loop": (_loop, "is a symlink that loops or points nowhere"),
    "dangling": (_dangling, "is a symlink that loops or points nowhere"),
    "outside": (_outside, "is a symlink out of models.root"),
}


@pytest.mark.parametrize("damage", list(PTH_CASES))
def test_bad_pth_t5(cli, ws, damage):
    fn, problem = PTH_CASES[damage]
    path = ws / "models" / T5
    if damage == "cut":  # a zip big enough that half of it loses the end record
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data/0", GARBAGE * 4)
    fn(path, ws)
    refused(cli, ws, ["validate", ws / "jobs" / "clips.yaml"], [f"models.t5: {path}", problem])


# --- folders: models.root and a dataset folder ------------------------------------------------------------------


def _root_swap(damage: Damage) -> Damage:
    """The damage applied to a folder: it moves aside first, so links and FIFOs take its place."""

    def apply(path: Path, ws: Path) -> None:
        aside = ws / "elsewhere" / f"{path.name}-aside"
        path.rename(aside)
        aside.with_name("placeholder").write_text("x")
        (aside.parent / "placeholder").rename(path)
        damage(path, ws)

    return apply


FOLDER_DAMAGE = {
    "file": lambda p, ws: None,  # the placeholder file stays
    "fifo": _fifo,
    "loop": _loop,
    "dangling": _dangling,
}
ROOT_PROBLEMS = {
    "file": "is a file, but models.root must be a folder",
    "fifo": "is a FIFO or device, but models.root must be a folder",
    "loop": "is a symlink that loops or points nowhere",
    "dangling": "is a symlink that loops or points nowhere",
}


@pytest.mark.parametrize("damage", list(ROOT_PROBLEMS))
def test_bad_models_root(cli, ws, damage):
    _root_swap(FOLDER_DAMAGE[damage])(ws / "models", ws)
    refused(cli, ws, ["validate", ws / "jobs" / "clips.yaml"], [f"models.root: {ws / 'models'}", ROOT_PROBLEMS[damage]])


DATASET_PROBLEMS = {
    "file": "is a file, not a folder",
    "fifo": "is a FIFO, not a folder",
    "loop": "is a symlink loop",
    "dangling": "is a dangling symlink",
}


@pytest.mark.parametrize("damage", list(DATASET_PROBLEMS))
def test_bad_dataset_folder(cli, ws, damage):
    folder = ws / "data" / "clips"
    _root_swap(FOLDER_DAMAGE[damage])(folder, ws)
    problem = DATASET_PROBLEMS[damage]
    refused(cli, ws, ["validate", ws / "jobs" / "clips.yaml"], [f"datasets[0].path: {folder}", problem])
    refused(cli, ws, ["dataset", "check", folder], [str(folder), problem])
    refused(cli, ws, ["dataset", "prepare", folder, "--out", ws / "prepared"], [str(folder), problem])
    assert not (ws / "prepared").exists()


def test_empty_dataset_folder(cli, ws):
    folder = ws / "data" / "clips"
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "notes.md").write_bytes(GARBAGE)
    refused(cli, ws, ["validate", ws / "jobs" / "clips.yaml"], [f"datasets[0].path: {folder} holds no images or videos"])
    code, out, err = run(cli, ws, "dataset", "check", folder)
    assert code == 1 and "no images or videos in this folder" in out, out + err


@pytest.mark.parametrize("kind,holds", [("image", "only videos"), ("mixed", "only videos")])
def test_dataset_kind_contradicting_the_folder(cli, ws, kind, holds):
    job = ws / "jobs" / "clips.yaml"
    job.write_text(job.read_text() + f"    kind: {kind}\n")
    refused(cli, ws, ["validate", job], [f"{job}:10: datasets[0].kind", f"is {kind}, but the folder holds {holds}", f"kind: video"])


def test_image_kind_on_a_folder_of_stills_with_a_video(cli, ws):
    write_caption(write_video(ws / "data" / "stills" / "moving.mp4", 33, 16))
    job = ws / "jobs" / "stills.yaml"
    job.write_text(job.read_text() + "    kind: image\n")
    refused(cli, ws, ["validate", job], ["datasets[0].kind", "the folder holds both images and videos", "kind: mixed"])


# --- dataset prepare: what it refuses before writing, and a bad source among good ones ---------------------------


@pytest.mark.parametrize("damage", ["file", "dangling"])
def test_prepare_out_that_cannot_be_a_folder(cli, ws, damage):
    out = ws / "elsewhere" / "out"
    if damage == "file":
        out.write_text("a file the user keeps")
    else:
        out.symlink_to(ws / "elsewhere" / "gone")
    refused(cli, ws, ["dataset", "prepare", ws / "data" / "clips", "--out", out], ["--out", str(out)])


def test_prepare_names_a_fifo_source_and_prepares_the_rest(cli, ws):
    src = ws / "data" / "clips"
    _fifo(src / "clip2.mp4", ws)
    out = ws / "elsewhere" / "prepared"
    before = tree(src)
    with time_limit(CASE_SECONDS * 4):  # two clips through worker processes
        code, stdout, err = cli("dataset", "prepare", src, "--out", out, "--frames", "33", "--workers", "1")
    assert code == 1, stdout + err
    assert "clip2.mp4: is a FIFO, not a regular file" in err and "Traceback" not in stdout + err
    assert (out / "clip1_000.mp4").is_file() and (out / "clip1_000.txt").is_file()
    assert tree(src) == before


# --- dataset check / prepare options and the caption extension (the examples) ---------------------------

OPTION_CASES = [
    ("check", ["--frames", "0"], "--frames"),
    ("check", ["--source-fps", "-5"], "--source-fps"),
    ("check", ["--source-fps", "0"], "--source-fps"),
    ("check", ["--source-fps", "nan"], "--source-fps"),
    ("prepare", ["--fps", "0"], "--fps"),
    ("prepare", ["--fps", "-16"], "--fps"),
    ("prepare", ["--fps", "nan"], "--fps"),
    ("prepare", ["--max-side", "0"], "--max-side"),
    ("prepare", ["--workers", "0"], "--workers"),
    ("prepare", ["--caption-extension", "txt"], "--caption-extension"),
]


@pytest.mark.parametrize("command,options,named", OPTION_CASES, ids=[f"{c}{' '.join(o)}" for c, o, _ in OPTION_CASES])
def test_dataset_option_out_of_range(cli, ws, command, options, named):
    out = ws / "elsewhere" / "prepared"
    args = ["dataset", command, ws / "data" / "clips", *(["--out", out] if command == "prepare" else []), *options]
    refused(cli, ws, args, [named])
    assert not out.exists()


def test_caption_extension_that_is_a_path(cli, ws):
    job = ws / "jobs" / "clips.yaml"
    job.write_text(job.read_text() + "    caption_extension: ./captions.txt\n")
    refused(cli, ws, ["validate", job], [f"{job}:10: datasets[0].caption_extension", "./captions.txt"])
