from pathlib import Path

import av
import pytest

from runner.data.check import Settings, check_directory
from runner.data.prepare import STATE_DIR, Options, prepare
from runner.data.synth import write_caption, write_image, write_video
from runner.errors import UserError


def _frames_and_rate(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sum(1 for _ in c.decode(s)), float(s.average_rate)


@pytest.fixture
def src(tmp_path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    write_caption(write_video(d / "seed clip.mp4", 57, 30), "a dog")  # 57 frames at 30 fps = 30 at 16 fps
    write_caption(write_video(d / "long ✓.mkv", 100, 24, width=96, height=64), "a cat")  # 66 frames at 16 fps
    write_video(d / "nocap.mp4", 20, 16)
    write_caption(write_image(d / "still.png", 80, 40), "a still")
    (d / "broken.mp4").write_bytes(b"junk" * 100)
    return d


def _snapshot(d: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.iterdir()}


def test_clips_fps_captions_and_src_untouched(src, tmp_path):
    before = _snapshot(src)
    dst = tmp_path / "dst"
    report = prepare(src, dst, Options(frames=17, max_side=32, min_frames=9, workers=2))
    assert _snapshot(src) == before
    by = {r.source: r for r in report.results}
    assert by["seed clip.mp4"].outputs == ["seed clip_000.mp4", "seed clip_001.mp4"]  # 17 + a 13-frame tail
    assert by["long ✓.mkv"].frames_in == 67  # ffmpeg's fps filter rounds 66.7 to the nearest frame
    assert by["broken.mp4"].error
    assert not by["nocap.mp4"].caption
    assert _frames_and_rate(dst / "seed clip_000.mp4") == (17, 16.0)
    assert _frames_and_rate(dst / "seed clip_001.mp4") == (13, 16.0)
    with av.open(str(dst / "long ✓_000.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (32, 22)
    assert (dst / "seed clip_001.txt").read_text() == "a dog"
    assert (dst / "still.txt").read_text() == "a still"
    assert "failed" in report.summary()
    # What prepare wrote trains as it is: every clip lands in a bucket.
    check = check_directory(dst, Settings(frames=[9, 13, 17]))
    assert all(f.verdicts["diffpipe"].level != "drop" for f in check.files if f.name != "nocap_000.mp4")


def test_second_run_resumes_and_redoes_a_changed_source(src, tmp_path):
    dst = tmp_path / "dst"
    prepare(src, dst, Options(frames=17, workers=1))
    again = prepare(src, dst, Options(frames=17, workers=1))
    assert {r.source for r in again.results if r.resumed} == {"seed clip.mp4", "long ✓.mkv", "nocap.mp4", "still.png"}
    (dst / "long ✓_001.mp4").unlink()
    write_caption(write_video(src / "seed clip.mp4", 81, 16), "a dog")
    third = prepare(src, dst, Options(frames=17, workers=1))
    redone = {r.source for r in third.results if not r.resumed and not r.error}
    assert redone == {"seed clip.mp4", "long ✓.mkv"}
    assert (dst / "long ✓_001.mp4").is_file()
    assert not any((dst / STATE_DIR / "tmp").iterdir())


def test_refuses_bad_frames_and_writing_into_src(src):
    with pytest.raises(UserError, match="4k\\+1"):
        prepare(src, src.parent / "out", Options(frames=80))
    with pytest.raises(UserError, match="inside SRC"):
        prepare(src, src / "out", Options())
