"""`runner caption` without an engine: which files get a caption, how a caption is placed, the presets, bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from runner.caption import work
from runner.models import captioner as models
from runner.caption.run import ModelChoice, choose_model, work_file
from runner.data.synth import write_caption, write_image, write_video
from runner.errors import UserError


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    write_video(d / "a.mp4", 9, 16)
    write_video(d / "b.mp4", 9, 16)
    write_image(d / "c.png")
    write_caption(d / "b.mp4", "my own words")
    return d


def test_listing_takes_files_without_caption_and_keeps_the_others(folder):
    found = work.listing(work.Request(folder), set())
    assert [m.name for m in found.todo] == ["a.mp4", "c.png"] and [m.name for m in found.kept] == ["b.mp4"]
    every = work.listing(work.Request(folder, overwrite=True), set())
    assert [m.name for m in every.todo] == ["a.mp4", "b.mp4", "c.png"]
    resumed = work.listing(work.Request(folder, overwrite=True), {"b.mp4"})
    assert [m.name for m in resumed.kept] == ["b.mp4"], "an --overwrite pass continued after a kill does not redo its own captions"


def test_listing_follows_the_caption_extension_and_names_unreadable_entries(folder):
    write_caption(folder / "a.mp4", "x", ".caption")
    os.mkfifo(folder / "d.mp4")
    found = work.listing(work.Request(folder, ".caption"), set())
    assert [m.name for m in found.kept] == ["a.mp4"]
    assert [m.name for m in found.todo] == ["b.mp4", "c.png"], "b.txt is no caption for the .caption extension"
    assert [(m.name, "FIFO" in p or "regular" in p) for m, p in found.unreadable] == [("d.mp4", True)]


def test_trigger_word_comes_first_on_one_line():
    assert work.final_text("a dog\nruns  fast ", "sks") == "sks, a dog runs fast"
    assert work.final_text("", "sks") == "sks" and work.final_text("a dog", "") == "a dog"
    for bad in ("", "  ", "two\nlines"):
        with pytest.raises(UserError, match="--trigger"):
            work.check_trigger(bad)


def test_place_never_replaces_a_caption_without_overwrite(folder):
    req = work.Request(folder)
    assert work.place(folder / "a.mp4", "sks, new", req, "T") == ("written", None)
    assert (folder / "a.txt").read_text() == "sks, new\n"
    assert work.place(folder / "b.mp4", "sks, other", req, "T") == ("kept", None), "a caption that appeared meanwhile stays"
    assert (folder / "b.txt").read_text() == "my own words"
    assert not [p for p in folder.iterdir() if ".runner-" in p.name], "no temporary file is left"


def test_overwrite_keeps_the_old_caption_as_a_backup_no_trainer_reads(folder):
    how, backup = work.place(folder / "b.mp4", "sks, new", work.Request(folder, overwrite=True), "20261130T070000Z")
    assert how == "written" and backup.name == "b.txt.runner-backup-20261130T070000Z"
    assert backup.read_text() == "my own words" and (folder / "b.txt").read_text() == "sks, new\n"
    from runner.data.media import media_files

    assert backup not in media_files(folder)[0], "the backup is no media file and no caption"


def test_overwrite_pass_state_is_runners_own(tmp_path, folder, monkeypatch):
    monkeypatch.setenv("RUNNER_STATE", str(tmp_path / "state"))
    state = work.State("local", folder)
    state.add_replaced("b.mp4")
    assert work.State("local", folder).replaced() == {"b.mp4"} and state.folder.is_relative_to(tmp_path / "state")
    assert work.State("gpu01", folder).replaced() == set(), "another host's pass is its own"
    state.pass_finished()
    assert state.replaced() == set()


def test_presets_cover_12_16_and_24_gb_cards_from_one_download():
    cards = {m.card_gib: m for m in models.PRESETS.values()}
    assert {12, 16, 24} <= set(cards)
    sevens = [m for m in models.PRESETS.values() if "7b" in m.name]
    assert {m.repo for m in sevens} == {"Qwen/Qwen2.5-VL-7B-Instruct"} and {m.quant for m in sevens} == {None, "8bit", "4bit"}
    assert models.get(models.DEFAULT).folder == Path("Qwen2.5-VL-7B-Instruct")


def test_model_choice_is_a_preset_or_a_model_folder(tmp_path):
    assert choose_model("Qwen2.5-VL-7B-4bit").quant == "4bit"
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        choose_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    assert choose_model(str(tmp_path / "m")).folder == (tmp_path / "m").resolve()
    with pytest.raises(UserError, match="not a captioner preset"):
        choose_model("llava")


def test_work_file_sends_videos_as_videos_with_the_style_prompt(folder):
    req = work.Request(folder, style="detailed")
    doc = work_file(req, [folder / "a.mp4", folder / "c.png"], "/models/X", ModelChoice(models.get("qwen2.5-vl-7b-8bit")), 16.0)
    assert [(i["kind"], i["src"]) for i in doc["items"]] == [("video", "/data/0-media/a.mp4"), ("image", "/data/0-media/c.png")]
    assert doc["quant"] == "8bit" and doc["fps"] == 16.0 and doc["max_new_tokens"] == work.STYLES["detailed"][1]
    assert "{kind}" in doc["prompt"], "the captioner says video or image per file"
    json.dumps(doc)


def _runner(args, tmp_path):
    env = dict(os.environ, RUNNER_STATE=str(tmp_path / "state"), DOCKER_HOST="tcp://127.0.0.1:9", COLUMNS="200")
    return subprocess.run(["runner", "caption", *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, where", [
    (["{missing}"], "does not exist"),
    (["{folder}", "--style", "long"], "--style"),
    (["{folder}", "--trigger", ""], "--trigger"),
    (["{folder}", "--prompt", "{empty}"], "is empty"),
    (["{folder}", "--prompt", "{folder}"], "prompt file"),
    (["{folder}", "--model", "llava-7b"], "not a captioner preset"),
    (["{folder}", "--job", "{missing}"], "missing.yaml"),
])
def test_bad_inputs_exit_2_before_docker_with_nothing_written(tmp_path, folder, args, where):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    before = sorted(p.name for p in folder.iterdir())
    argv = [a.format(folder=folder, missing=tmp_path / "missing.yaml", empty=empty) for a in args]
    r = _runner(argv, tmp_path)
    assert r.returncode == 2, r.stderr
    assert where in r.stderr and "Fix:" in r.stderr, r.stderr
    assert sorted(p.name for p in folder.iterdir()) == before and not (tmp_path / "state").exists()


def test_download_fetches_a_captioner_preset_into_its_folder(tmp_path, monkeypatch):
    from tests.hubserver import HubServer, Repo
    from runner.models.download import fetch, plan
    from runner.models.presets import Format

    files = {"config.json": b'{"model_type": "qwen2_5_vl"}', "chat_template.json": b"{}", "merges.txt": b"#v\n", "vocab.json": b"{}",
             "model-00001-of-00002.safetensors": b"w1" * 1000, "model-00002-of-00002.safetensors": b"w2" * 1000, "README.md": b"card"}
    with HubServer({"Qwen/Qwen2.5-VL-7B-Instruct": Repo(files, {n for n in files if n.endswith(".safetensors")})}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        items = plan("Qwen2.5-VL-7B-4bit", Format.comfy, [], tmp_path / "models", tmp_path / "hf")
        assert sorted(i.filename for i in items) == sorted(n for n in files if n != "README.md")
        fetch(items, tmp_path / "models")
    folder = tmp_path / "models" / "Qwen2.5-VL-7B-Instruct"
    assert (folder / "model-00002-of-00002.safetensors").read_bytes() == files["model-00002-of-00002.safetensors"]
    assert choose_model("qwen2.5-vl-7b-4bit").preset.folder == folder.relative_to(tmp_path / "models"), "where runner caption looks"


def test_caption_memory_is_weights_by_dtype_plus_vision_tokens_and_says_it_is_an_estimate():
    from runner.gpu.captioning import estimate

    full, int8, nf4 = (estimate(models.get(n), 33, 448 * 448, 80) for n in ("qwen2.5-vl-7b", "qwen2.5-vl-7b-8bit", "qwen2.5-vl-7b-4bit"))
    assert 15 < full.weights_gib < 16, "8.3 B parameters in bf16"
    assert full.weights_gib > int8.weights_gib > nf4.weights_gib > 2 * 1.09e9 / 2**30, "embeddings and LM head stay bf16"
    assert full.vision_tokens == 17 * 256, "33 frames → 17 pairs of 32×32 patches, merged 2×2"
    longer = estimate(models.get("qwen2.5-vl-7b"), 81, 448 * 448, 80)
    assert longer.peak_gib > full.peak_gib and longer.weights_gib == full.weights_gib
    for m in models.PRESETS.values():
        assert estimate(m, 81, 448 * 448, 300).peak_gib < m.card_gib, f"{m.name} fits the {m.card_gib} GB card it is meant for"
    assert "measured on an H200" in full.describe()


@pytest.mark.parametrize("row", [json.loads(x) for x in (Path(__file__).parents[1] / "bench" / "data" / "gpu_caption.jsonl").read_text().splitlines()],
                         ids=lambda r: f"{r['quant']}-{r['frames']}-run{r['run']}")
def test_caption_estimate_covers_the_real_size_7b_measured_on_a_gpu(row):
    """bench/gpu_caption.py on an H200 (random weights of the real architecture): the estimate is at least what PyTorch
    reserved plus the CUDA context, and at most 15 % above."""
    from runner.gpu.captioning import OUTSIDE_GIB, estimate

    name = "qwen2.5-vl-7b" + ("" if row["quant"] == "bf16" else f"-{row['quant']}")
    peak = estimate(models.get(name), row["frames_seen"], 448 * 448, row["new_tokens"]).peak_gib
    assert row["peak_reserved_gib"] + OUTSIDE_GIB <= peak <= 1.15 * (row["peak_reserved_gib"] + OUTSIDE_GIB)


def test_plan_covers_captioning_the_jobs_clips(cli, workspace):
    code, out, err = cli("plan", str(workspace / "examples" / "t2v-1.3B-musubi.yaml"), "--vram", "24", "--ram", "64", "--caption", "qwen2.5-vl-7b-4bit", "--json")
    assert code in (0, 1), err
    cap = json.loads(out)["captioning"]
    assert cap["model"] == "qwen2.5-vl-7b-4bit" and cap["frames"] == 33 and cap["measured"] is True and cap["peak_gib"] > cap["weights_gib"]
    code, out, err = cli("plan", str(workspace / "examples" / "t2v-1.3B-musubi.yaml"), "--caption", "llava")
    assert code == 2 and "--caption" in err and "qwen2.5-vl-7b" in err


def test_a_second_caption_run_on_the_same_folder_is_refused_before_docker(tmp_path, folder, monkeypatch):
    monkeypatch.setenv("RUNNER_STATE", str(tmp_path / "state"))
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with work.State("local", folder).held():
        r = _runner([folder, "--model", model], tmp_path)
    assert r.returncode == 2 and "being captioned by another" in r.stderr, r.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.mp4", "b.mp4", "b.txt", "c.png"]
