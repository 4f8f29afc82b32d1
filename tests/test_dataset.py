import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.cli import app
from runner.data.check import Settings, check_directory, dataset_problems, diffpipe_bucket, musubi_frames
from runner.data.synth import write_caption, write_image, write_video
from runner.errors import UserError
from runner.spec import Dataset, Task, Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_caption(write_video(d / "seed clip.mp4", 57, 30))
    write_caption(write_video(d / "long.mkv", 100, 24))  # Matroska: no frame count in the header
    write_caption(write_video(d / "exact16.webm", 40, 16))
    write_caption(write_image(d / "still.png"))
    write_image(d / "uncaptioned.jpg")
    write_caption(write_video(d / "émoji ✓.mov", 81, 25), "")
    write_caption(write_video(d / "Upper.Mp4", 40, 16))
    (d / "broken.mp4").write_bytes(b"not a video" * 50)
    write_caption(d / "broken.mp4")
    (d / "notes.md").write_text("not media")
    return d


def _files(report):
    return {f.name: f for f in report.files}


def test_the_seed_57_frame_clip_in_one_line(data):
    seed = _files(check_directory(data, Settings(frames=[33])))["seed clip.mp4"]
    assert seed.verdicts["diffpipe"].level == "drop"
    assert seed.verdicts["diffpipe"].text == "57 frames at 30 fps = 30 frames at 16 fps → dropped: shorter than the smallest bucket 33"
    bucketed = _files(check_directory(data, Settings(frames=[29, 33])))["seed clip.mp4"]
    assert bucketed.verdicts["diffpipe"].text == "57 frames at 30 fps = 30 frames at 16 fps → bucket 29 (of 29/33), not 57"


def test_metadata_and_where_it_came_from(data):
    files = _files(check_directory(data, Settings()))
    assert (files["seed clip.mp4"].frames, files["seed clip.mp4"].fps, files["seed clip.mp4"].frames_from) == (57, 30.0, "header")
    assert (files["long.mkv"].frames, files["long.mkv"].frames_from) == (100, "packets")
    assert (files["still.png"].width, files["still.png"].height, files["still.png"].kind) == (64, 64, "image")
    assert files["broken.mp4"].error


def test_verdicts_per_trainer(data):
    report = check_directory(data, Settings(frames=[33]))
    files = _files(report)
    assert files["long.mkv"].verdicts["diffpipe"].text.startswith("100 frames at 24 fps = 66 frames at 16 fps → bucket 33")
    assert files["uncaptioned.jpg"].verdicts["diffpipe"].level == "drop"
    assert files["uncaptioned.jpg"].verdicts["musubi"].level == "drop"  # musubi filters uncaptioned images silently
    assert files["broken.mp4"].verdicts["diffpipe"].level == "drop"
    assert files["broken.mp4"].verdicts["musubi"].level == "error"
    assert "empty caption" in files["émoji ✓.mov"].verdicts["diffpipe"].text
    assert "not a video extension" in files["Upper.Mp4"].verdicts["diffpipe"].text
    assert "does not read '.Mp4'" in files["Upper.Mp4"].verdicts["musubi"].text
    assert "source_fps: 30" in files["seed clip.mp4"].verdicts["musubi"].text
    assert report.ignored == ["notes.md"]
    assert report.failed


def test_musubi_source_fps_and_4k1_rounding(data):
    files = _files(check_directory(data, Settings(frames=[32], source_fps=30, trainers=[Trainer.musubi])))
    assert files["seed clip.mp4"].verdicts["musubi"].text == "57 frames, source_fps 30 → 30 at 16 fps → clip 29 from the start"


def test_frame_arithmetic():
    assert diffpipe_bucket(30, [33]) is None
    assert diffpipe_bucket(30, [17, 29, 33]) == 29
    assert diffpipe_bucket(1, [33]) is None
    assert musubi_frames(57, None) == 57
    assert musubi_frames(30, 30) == 16
    assert musubi_frames(10, 8) == 10  # never duplicates frames


def test_i2v_without_videos_and_colliding_stems(tmp_path):
    write_caption(write_image(tmp_path / "a.png"))
    write_caption(write_image(tmp_path / "a.jpg"))
    report = check_directory(tmp_path, Settings(task=Task.i2v_14b_480p))
    texts = [p.text for p in report.problems]
    assert any("trains on videos" in t for t in texts)
    assert any("share the stem 'a'" in t for t in texts)
    problems = dataset_problems(Dataset(path=tmp_path), Trainer.diffpipe, Task.i2v_14b_480p)
    assert any("trains on videos" in e.problem for e in problems)


def test_dataset_problems_names_dropped_videos(data):
    problems = dataset_problems(Dataset(path=data, frames=[33]), Trainer.diffpipe, Task.t2v_1_3b)
    seed = next(e for e in problems if e.where.endswith("seed clip.mp4"))
    assert "shorter than the smallest bucket 33" in seed.problem
    assert "frames" in seed.fix


def test_cli_json_and_exit_code(data, tmp_path):
    result = CliRunner().invoke(app, ["dataset", "check", str(data), "--json", "--frames", "17"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["failed"] is True
    assert {f["name"] for f in doc["files"]} >= {"seed clip.mp4", "émoji ✓.mov"}
    clean = tmp_path / "clean"
    clean.mkdir()
    write_caption(write_video(clean / "a.mp4", 33, 16))
    ok = CliRunner().invoke(app, ["dataset", "check", str(clean)])
    assert ok.exit_code == 0, ok.output
    assert "every file trains" in ok.output


def test_cli_takes_settings_from_the_job(data, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(f"name: j\ntrainer: diffpipe\ntask: t2v-1.3B\nmodels: {{}}\ndatasets:\n  - path: {data}\n    frames: [17, 29]\n")
    result = CliRunner().invoke(app, ["dataset", "check", str(data), "--job", str(job), "--json"])
    doc = json.loads(result.stdout)
    assert doc["settings"]["trainers"] == ["diffpipe"]
    seed = next(f for f in doc["files"] if f["name"] == "seed clip.mp4")
    assert "bucket 29" in seed["verdicts"]["diffpipe"]["text"]
    other = CliRunner().invoke(app, ["dataset", "check", str(tmp_path), "--job", str(job)])
    assert isinstance(other.exception, UserError)  # main() turns it into exit 2
    assert "has no dataset" in other.exception.problem
