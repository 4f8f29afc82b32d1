"""`runner selftest`: the model-file writer and the LoRA check on their own, then the whole command against the
real Docker engine and an SSH test host with the stand-in trainers (tests/standin/; no GPU: RUNNER_GPUS=none).

The stand-in images hold no torch, so the writer leaves the tensor data as holes there (the stand-ins read only
headers); on a GPU host the real images get random values, loaded back with torch.load by the writer itself.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest

from runner.models import weights
from runner.selftest import arch, lora, make_files, watch
from runner.spec import Trainer
from tests.dockerfixtures import runner, runner_env
from tests.test_docker import built  # noqa: F401  (the stand-in images, built once per session)

TENSORS = [["a.weight", "BF16", [3, 4], ["normal", 0.5]], ["b", "F32", [5], ["const", 1.0]], ["c", "F16", [2, 2, 2], ["normal", 1.0]]]


class _TorchFree(pickle.Unpickler):
    """Reads torch.save's data.pkl without torch: each tensor becomes (storage id, size, stride)."""

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, requires_grad, hooks: (storage, offset, size, stride, requires_grad)
        if module == "torch" and name.endswith("Storage"):
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        return pid


def _values(fill: str) -> make_files.Values:
    if fill == "random":
        pytest.importorskip("numpy", reason="the writer's random fill uses numpy, as in the trainer images")
    return make_files.Values(fill, 0)


@pytest.mark.parametrize("fill", ["random", "holes"])
def test_pth_is_the_zip_torch_save_writes(tmp_path, fill):
    path = tmp_path / "model.pth"
    make_files.write_pth(str(path), TENSORS, _values(fill))
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None, "every entry's CRC-32 matches"
        assert z.namelist() == ["model/data.pkl", "model/byteorder", "model/data/0", "model/data/1", "model/data/2", "model/version"]
        assert z.read("model/byteorder") == b"little" and z.read("model/version") == b"3\n"
        state = _TorchFree(z.open("model/data.pkl")).load()
        data = [z.read(f"model/data/{i}") for i in range(3)]
        raw = path.read_bytes()
        for info in z.infolist():  # torch aligns each record's data to 64 bytes (needed for mmap=True)
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename
    assert state == {
        "a.weight": (("storage", "BFloat16Storage", "0", "cpu", 12), 0, (3, 4), (4, 1), False),
        "b": (("storage", "FloatStorage", "1", "cpu", 5), 0, (5,), (1,), False),
        "c": (("storage", "HalfStorage", "2", "cpu", 8), 0, (2, 2, 2), (4, 2, 1), False),
    }
    assert [len(d) for d in data] == [24, 20, 16]
    if fill == "random":
        assert struct.unpack("<5f", data[1]) == (1.0,) * 5
        assert any(data[0]) and any(data[2])
    else:
        assert not any(b"".join(data))


def test_bf16_is_the_upper_half_of_float32(tmp_path):
    np = pytest.importorskip("numpy", reason="the writer's random fill uses numpy, as in the trainer images")
    v = make_files.Values("random", 0)
    block = np.frombuffer(v.block("BF16", ["normal", 0.02], "k"), dtype="<u2")
    as_f32 = (block.astype(np.uint32) << 16).view(np.float32)
    assert np.isfinite(as_f32).all() and 0.015 < as_f32.std() < 0.025
    assert v.block("BF16", ["const", 1.0], "k")[:2] == b"\x80\x3f"


def test_safetensors_header_and_holes(tmp_path):
    path = tmp_path / "big.safetensors"
    big = [["w", "BF16", [4096, 65536], ["normal", 0.02]], ["n", "F32", [4096], ["const", 1.0]]]
    make_files.write_safetensors(str(path), big, make_files.Values("holes", 0), {"format": "pt"})
    header, start = weights.read_header_and_offset(path)
    assert header["__metadata__"] == {"format": "pt"}
    assert header["w"] == {"dtype": "BF16", "shape": [4096, 65536], "data_offsets": [0, 2 * 4096 * 65536]}
    assert path.stat().st_size == start + 2 * 4096 * 65536 + 4 * 4096 and start % 8 == 0
    assert path.stat().st_blocks * 512 < 2**20, "holes: a 512 MiB tensor takes no disk"


def test_tables_are_wan_2_1_t2v_1_3b():
    params = {name: sum(__import__("math").prod(s) for _, _, s, _ in t) for name, t in
              {"dit": arch.dit("BF16"), "t5": arch.umt5_official("BF16"), "vae": arch.vae()}.items()}
    # 1.42 B DiT (2.84 GB in bf16), 5.68 B umT5-XXL encoder (11.4 GB in bf16), 127 M VAE (508 MB in fp32)
    assert params == {"dit": 1_418_996_800, "t5": 5_680_910_336, "vae": 126_892_531}
    comfy = {k for k, *_ in arch.umt5_comfy("F16")}
    assert {"shared.weight", "encoder.final_layer_norm.weight", "encoder.block.23.layer.1.DenseReluDense.wo.weight",
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"} <= comfy and len(comfy) == 242
    dit = {k: s for k, _, s, _ in arch.dit("BF16")}
    assert dit["blocks.29.cross_attn.k.weight"] == [1536, 1536] and dit["head.head.weight"] == [64, 1536]


def test_files_follow_runner_download_layout():
    from runner.models.presets import Format

    comfy = {f["path"] for f in arch.files(Format.comfy, [Trainer.musubi])}
    assert comfy == {"Wan2.1-T2V-1.3B/config.json", "Wan2.1-T2V-1.3B/Wan2.1_VAE.pth", "Wan2.1-T2V-1.3B/google/umt5-xxl",
                     "Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth",
                     "Wan_2.1_ComfyUI_repackaged/split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors"}
    official = {f["path"] for f in arch.files(Format.official, [Trainer.diffpipe])}
    assert "Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors" in official and not any("ComfyUI" in p for p in official)
    dtypes = {f["path"]: f["tensors"][0][1] for f in arch.all_files() if "tensors" in f}
    assert dtypes["Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors"] == "F32", "the official DiT is fp32"
    assert dtypes["Wan_2.1_ComfyUI_repackaged/split_files/text_encoders/umt5_xxl_fp16.safetensors"] == "F16"


def test_wan22_tables_are_the_upstream_architectures():
    """Compared key for key with the state dicts of diffusion-pipe's WanModel and vae2_2.WanVAE_ at its pin (bench/make_wan22_models.py)."""
    from math import prod

    params = {name: sum(prod(s) for _, _, s, _ in t) for name, t in {
        "5B": arch.dit("F16", arch.CONFIGS["ti2v-5B"]), "A14B": arch.dit("F16", arch.CONFIGS["t2v-A14B"]), "vae22": arch.vae22()}.items()}
    assert params == {"5B": 4_999_787_712, "A14B": 14_288_491_584, "vae22": 704_688_668}
    vae = {k: s for k, _, s, _ in arch.vae22()}
    # 2x2 patchify in (12 channels), 48 latent channels, each level its own module list
    assert vae["encoder.conv1.weight"] == [160, 12, 3, 3, 3] and vae["conv2.weight"] == [48, 48, 1, 1, 1] and len(vae) == 196
    assert vae["decoder.upsamples.0.upsamples.3.time_conv.weight"] == [2048, 1024, 3, 1, 1]
    five = {k: s for k, _, s, _ in arch.dit("F16", arch.CONFIGS["ti2v-5B"])}
    assert five["patch_embedding.weight"] == [3072, 48, 1, 2, 2] and five["head.head.weight"] == [192, 3072]


def test_wan22_files_follow_runner_download_layout():
    from runner.models.presets import Format

    five = {f["path"] for f in arch.files(Format.comfy, [Trainer.diffpipe], "ti2v-5B")}
    assert five == {"Wan2.2-TI2V-5B/config.json", "Wan2.2-TI2V-5B/Wan2.2_VAE.pth", "Wan2.2-TI2V-5B/google/umt5-xxl",
                    "Wan_2.2_ComfyUI_Repackaged/split_files/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors",
                    "Wan_2.1_ComfyUI_repackaged/split_files/text_encoders/umt5_xxl_fp16.safetensors"}
    a14b = {f["path"] for f in arch.files(Format.official, [Trainer.musubi], "t2v-A14B")}
    assert "Wan2.2-T2V-A14B/low_noise_model/diffusion_pytorch_model-00001-of-00001.safetensors" in a14b
    assert "Wan2.2-T2V-A14B/high_noise_model/config.json" in a14b and not any("high_noise_model/diffusion" in p for p in a14b)
    assert "Wan2.2-T2V-A14B/Wan2.1_VAE.pth" in a14b, "the A14B experts use Wan2.1's VAE"


def test_standin_tokenizer_loads_as_a_t5_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="the tokenizers library (in both trainer images) is not installed here")
    label = make_files.write_tokenizer(str(tmp_path / "google" / "umt5-xxl"), "Wan-AI/Wan2.1-T2V-14B")
    assert label.startswith("STAND-IN") and (tmp_path / "google" / "umt5-xxl" / "STAND-IN.txt").is_file()
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "google" / "umt5-xxl" / "tokenizer.json"))
    ids = tok.encode("a moving test pattern, clip 1").ids
    assert ids[-1] == 1 and 2 not in ids[:-1] and max(ids) < 256384, "ends with </s>, no <unk>, fits umT5's embedding"


def _lora_file(path: Path, trainer: Trainer, rank: int, b_init: list) -> Path:
    tensors = []
    for i in range(lora.BLOCKS):
        for m in lora.MODULES:
            if trainer is Trainer.diffpipe:
                tensors += [[f"diffusion_model.blocks.{i}.{m}.lora_A.weight", "BF16", [rank, 8], ["normal", 0.1]],
                            [f"diffusion_model.blocks.{i}.{m}.lora_B.weight", "BF16", [8, rank], b_init]]
            else:
                key = f"lora_unet_blocks_{i}_{m.replace('.', '_')}"
                tensors += [[f"{key}.lora_down.weight", "F32", [rank, 8], ["normal", 0.1]], [f"{key}.lora_up.weight", "F32", [8, rank], b_init],
                            [f"{key}.alpha", "F32", [], ["const", float(rank)]]]
    make_files.write_safetensors(str(path), tensors, _values("random"), {"ss_network_dim": str(rank)})
    return path


@pytest.mark.parametrize("trainer", list(Trainer))
def test_lora_check(tmp_path, trainer):
    trained = lora.check(_lora_file(tmp_path / "t.safetensors", trainer, 8, ["normal", 1e-3]), trainer, 8)
    assert trained.problems == () and trained.b_nonzero and trained.rank == 8 and trained.tensors == trained.expected
    untrained = lora.check(_lora_file(tmp_path / "u.safetensors", trainer, 8, ["const", -0.0]), trainer, 8)
    assert not untrained.b_nonzero and untrained.b_finite, "-0.0 is zero too"
    diverged = lora.check(_lora_file(tmp_path / "n.safetensors", trainer, 8, ["const", float("nan")]), trainer, 8)
    assert diverged.b_nonzero and not diverged.b_finite and any("NaN" in p for p in diverged.problems)
    other = Trainer.musubi if trainer is Trainer.diffpipe else Trainer.diffpipe
    wrong = lora.check(tmp_path / "t.safetensors", other, 16)
    assert any("outside" in p for p in wrong.problems) and any("rank" in p for p in wrong.problems)


def test_seconds_per_step_from_each_trainers_progress():
    musubi = ["[runner] step 3/3 train start: accelerate launch …", "steps:  50%|##   | 2/4 [00:06<00:06, 3.10s/it, avr_loss=0.1]",
              "steps: 100%|#####| 4/4 [00:12<00:00, 2.95s/it, avr_loss=0.1]"]
    assert watch.seconds_per_step(musubi) == (2.95, 4)
    assert watch.seconds_per_step(["[runner] step 1/1 train start: x", "steps: 2/2 [00:00<00:00, 4.00it/s]"]) == (0.25, 2)
    diffpipe = ["[runner] step 1/1 train start: deepspeed …", "steps: 1 loss: 0.15 iter time (s): 9.000 samples/sec: 0.1",
                "steps: 2 loss: 0.12 iter time (s): 1.000 samples/sec: 1.0", "steps: 3 loss: 0.11 iter time (s): 3.000 samples/sec: 0.3"]
    assert watch.seconds_per_step(diffpipe) == (2.0, 3), "the first step (compilation, allocation) is left out"
    assert watch.seconds_per_step(["[runner] done"]) == (None, None)


class _SmiReadings:
    """Stands in for nvidia-smi on a GPU host (none here): memory.used of two GPUs, one reading per call."""

    name = "gpuhost"

    def __init__(self, readings: list[str]):
        self.readings = iter(readings)

    def run(self, argv, timeout=60):
        from runner.shell import Result

        assert argv == watch.SMI
        return Result(0, next(self.readings), "")


def test_gpu_peak_per_plan_step():
    peak = watch.GpuPeak(_SmiReadings(["1024\n0\n", "7168\n0\n", "15360\n0\n", "3072\n0\n", "14336\n0\n"]))
    lines = iter(["[runner] step 1/3 cache-latents start: python …", "x", "[runner] step 3/3 train start: accelerate …", "y"])

    class Logs:
        def logs(self, container, follow=True):
            yield from lines

    watched = watch.Watched(Logs(), peak.set_step)
    stream = watched.logs("c")
    next(stream)
    peak.sample()  # 6 GiB above the 1 GiB in use before
    peak.sample()
    next(stream), next(stream)
    peak.sample(), peak.sample()
    assert peak.peaks_gib() == {"cache-latents": 14.0, "train": 13.0}
    assert watch.GpuPeak(_SmiReadings(["No devices were found\n"])).baseline is None


def test_table_shows_failures_and_figures():
    from rich.console import Console

    from runner.selftest import Result
    from runner.views import selftest_json, selftest_table

    ok = Result("musubi", True, steps=4, s_per_step=2.93, peak_gib=12.6, plan_gib=13.1, step_peaks_gib={"cache-text-encoder": 14.0, "train": 12.6},
                lora=lora.LoraCheck("x.safetensors", 900, 900, 32, "BF16/F32", True, True, ()))
    bad = Result("diffpipe", False, problems=["the job exited with 1; its log: /x.log"], notes=["tokenizer: STAND-IN tokenizer (the image has none)"])
    console = Console(width=220, record=True)
    console.print(selftest_table([ok, bad]))
    text = console.export_text()
    assert "pass" in text and "FAIL" in text and "2.93" in text and "12.6" in text and "13.1" in text
    assert "diffpipe: FAIL: the job exited with 1" in text and "cache-text-encoder 14.0, train 12.6" in text
    assert "n/a without a GPU" in text, "diffpipe has no figures: said so, not zero"
    assert json.loads(selftest_json([ok, bad]))[0]["lora"]["rank"] == 32


# --- the command, with a real Docker engine and the stand-in images ------------------------------------------


def _selftest(env: dict, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    r = runner(["selftest", "--json", *args], env)
    try:
        return r, json.loads(r.stdout)
    except json.JSONDecodeError:
        raise AssertionError(r.stdout[-3000:] + r.stderr[-4000:]) from None


def _check_standin_results(results: list[dict], trainers: list[str]) -> None:
    assert [r["trainer"] for r in results] == trainers
    for r in results:
        assert r["passed"] and r["problems"] == [], r
        assert r["standin"] and any("stand-in trainer" in n for n in r["notes"])
        assert r["steps"] == 4 and r["s_per_step"] is not None
        assert r["peak_gib"] is None and r["plan_gib"] is None, "no GPU, no figures: n/a, not zero"
        expected = {"diffpipe": 600, "musubi": 900}[r["trainer"]]
        assert r["lora"]["tensors"] == r["lora"]["expected"] == expected and r["lora"]["rank"] == 32
        assert Path(r["log"]).is_file() and "[runner] done" in Path(r["log"]).read_text()


def test_selftest_both_trainers_on_the_local_engine(built, tmp_path):
    env = runner_env(tmp_path)
    r, results = _selftest(env)
    assert r.returncode == 0, r.stderr[-4000:]
    _check_standin_results(results, ["diffpipe", "musubi"])
    assert "tokenizer: STAND-IN tokenizer" in results[0]["notes"][0] and "seeds none" in results[1]["notes"][0]
    (folder,) = (tmp_path / "svc" / "models" / "runner-selftest").iterdir()
    manifest = json.loads((folder / "RUNNER-SELFTEST.json").read_text())
    assert manifest["fill"] == "holes" and manifest["made_by"] == "runner selftest"
    assert "runner selftest" in (folder / "README.txt").read_text()
    assert (folder / "Wan2.1-T2V-1.3B" / "google" / "umt5-xxl" / "STAND-IN.txt").is_file()
    t5 = folder / "Wan_2.1_ComfyUI_repackaged/split_files/text_encoders/umt5_xxl_fp16.safetensors"
    assert weights.read_header_and_offset(t5)[0]["shared.weight"]["shape"] == [256384, 4096]
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}

    table = runner(["selftest", "--trainer", "musubi", "--steps", "2"], env)
    assert table.returncode == 0, table.stderr[-3000:]
    assert "reusing" in table.stdout and "musubi" in table.stdout and "pass" in table.stdout and "900/900" in table.stdout
    assert "n/a without a GPU" in table.stdout
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == stamps, "model files are made once"


def test_selftest_official_format(built, tmp_path):
    r, results = _selftest(runner_env(tmp_path), "--format", "official", "--trainer", "diffpipe")
    assert r.returncode == 0, r.stderr[-4000:]
    _check_standin_results(results, ["diffpipe"])
    job = (tmp_path / "state" / "selftest" / "jobs" / "diffpipe.yaml").read_text()
    assert "dit:" not in job and "ckpt_dir: runner-selftest/" in job, "official: diffusion-pipe reads ckpt_dir's DiT and T5"


@pytest.mark.parametrize("args,message", [
    (["--trainer", "kohya"], "--trainer: 'kohya' is not one of diffpipe, musubi"),
    (["--format", "gguf"], "--format: 'gguf' is not one of"),
    (["--task", "t2v-14B"], "--task: 't2v-14B' is not one of t2v-1.3B, ti2v-5B, t2v-A14B"),
    (["--task", "ti2v-5B", "--trainer", "musubi"], "musubi-tuner has no ti2v-5B task"),
    (["--host", "nowhere"], "nowhere"),
])
def test_selftest_bad_options_start_nothing(tmp_path, args, message):
    env = runner_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))
    r = runner(["selftest", *args], env)
    assert r.returncode == 2 and message in " ".join(r.stderr.split()), r.stderr
    assert not (tmp_path / "svc" / "models").exists() and not (tmp_path / "state" / "selftest").exists()


@pytest.mark.parametrize("task,trainers,blocks", [("ti2v-5B", ["diffpipe"], 30), ("t2v-A14B", ["diffpipe", "musubi"], 40)])
def test_selftest_wan22_on_the_local_engine(built, tmp_path, task, trainers, blocks):
    r, results = _selftest(runner_env(tmp_path), "--task", task)
    assert r.returncode == 0, r.stderr[-4000:]
    assert [x["trainer"] for x in results] == trainers, "musubi has no TI2V-5B: selftest leaves it out"
    for x in results:
        assert x["passed"] and x["standin"] and x["steps"] == 4, x
        assert x["lora"]["tensors"] == x["lora"]["expected"] == blocks * 10 * {"diffpipe": 2, "musubi": 3}[x["trainer"]]
    job = (tmp_path / "state" / "selftest" / "jobs" / f"{trainers[-1]}.yaml").read_text()
    assert f"task: {task}" in job and ("expert: low" in job) == (task == "t2v-A14B")


def test_selftest_on_a_remote_host(built, tmp_path):
    from tests.remotefixtures import ADDRESS, CLIENT_KEY, KNOWN_HOSTS, SRV, add_host, engine, host_dirs, require_remote

    require_remote()
    env = runner_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))
    tag = uuid.uuid4().hex[:8]
    models = f"{SRV}/gpu01/models/t-{tag}"
    subprocess.run(["ssh", "-i", CLIENT_KEY, "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", f"runnertest@{ADDRESS['gpu01']}", "mkdir", "-p", models], check=True)
    dirs = host_dirs("gpu01", tag)
    add_host(env, "gpu01", "gpu01", models, dirs)
    try:
        r, results = _selftest(env, "--host", "gpu01")
        assert r.returncode == 0, r.stderr[-4000:]
        _check_standin_results(results, ["diffpipe", "musubi"])
        made = list(Path(models).glob("runner-selftest/*/RUNNER-SELFTEST.json"))
        assert made, "the model files were made on the host"
        assert not (tmp_path / "svc" / "models").exists(), "and not here"
        assert Path(results[1]["lora"]["file"]).is_relative_to(tmp_path), "the LoRA was brought back to check it"
        assert not [c.name for c in engine("gpu01").containers.list(all=True) if c.name.startswith("runner-selftest")]
    finally:
        for d in [models, *dirs.values()]:
            subprocess.run(["rm", "-rf", d], check=False)
