"""Every trainer pitfall a job file can express, caught before any GPU time.

Each rule returns UserErrors that name the field, the bad value, what the trainer would do, and the fix.
Rules that look at files read the facts runner.job.resolve gathered where those files are (model headers on
the job's target, dataset folders here), so they run on the resolved job: the memory plan applied, and
nothing read twice.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterator

from runner import mounts
from runner.errors import JobInvalid, UserError
from runner.models import modelfiles, weights
from runner.spec import Job, Task, Trainer, experts, is_4k_plus_1, max_blocks_to_swap, round_4k1
from runner.trainers import diffpipe, musubi
from runner.trainers.resolved import ResolvedJob

Rule = Callable[[Job], Iterator[UserError]]
FactRule = Callable[[ResolvedJob], Iterator[UserError]]

DIFFPIPE_MAX_RESOLUTIONS = 3


def frames_4k_plus_1(job: Job) -> Iterator[UserError]:
    for i, d in enumerate(job.datasets):
        for n in d.frames or ():
            if not is_4k_plus_1(n):
                down = round_4k1(n)
                up = down + 4
                yield UserError(
                    f"datasets[{i}].frames",
                    f"{n} is not of the form 4k+1; Wan's VAE compresses time by 4, so both trainers round it "
                    f"down to {down} (musubi with only a warning) and the clips you planned are not the ones trained.",
                    f"use {down} or {up}.",
                )


def alpha_for_diffpipe(job: Job) -> Iterator[UserError]:
    a = job.lora.alpha
    if job.trainer is Trainer.diffpipe and a is not None and a != job.lora.rank:
        yield UserError(
            "lora.alpha",
            f"{a:g} differs from lora.rank {job.lora.rank}; diffusion-pipe has no alpha setting "
            "(its [adapter] alpha raises NotImplementedError) and always trains with alpha = rank.",
            "remove lora.alpha (or set it equal to lora.rank) for trainer: diffpipe.",
        )


def save_cadence(job: Job) -> Iterator[UserError]:
    s = job.schedule
    if s.save_every_epochs is None and s.save_every_steps is None:
        yield UserError(
            "schedule.save_every_epochs",
            "no save cadence is set (save_every_epochs and save_every_steps are both empty); diffusion-pipe "
            "refuses to start and musubi would save only at the very end, losing everything on a crash.",
            "set schedule.save_every_epochs: 1 (or save_every_steps).",
        )


def trainer_only_options(job: Job) -> Iterator[UserError]:
    s = job.schedule
    if job.trainer is not Trainer.musubi:
        return
    if s.checkpoint_every_minutes is not None:
        yield UserError(
            "schedule.checkpoint_every_minutes",
            f"{s.checkpoint_every_minutes} is set, but musubi-tuner saves state only by epochs or steps.",
            "use schedule.checkpoint_every_epochs for trainer: musubi.",
        )
    if s.max_steps and "epochs" in s.model_fields_set:
        yield UserError(
            "schedule.max_steps",
            f"{s.max_steps} with epochs: {s.epochs}; musubi-tuner cannot stop at whichever comes first (as diffusion-pipe "
            "does): --max_train_epochs replaces --max_train_steps.",
            "for trainer: musubi set only one of schedule.epochs and schedule.max_steps.",
        )
    ckpt = s.checkpoint_every_epochs
    if ckpt is not None and (ckpt != s.save_every_epochs or s.save_every_steps is not None):
        saves = [f"every {s.save_every_epochs} epochs (save_every_epochs)"] if s.save_every_epochs else []
        saves += [f"every {s.save_every_steps} steps (save_every_steps)"] if s.save_every_steps else []
        yield UserError(
            "schedule.checkpoint_every_epochs",
            f"{ckpt}, but musubi-tuner saves its training state only together with each LoRA it saves (--save_state): "
            f"here {' and '.join(saves) or 'at the end'}, not every {ckpt} epochs.",
            "for trainer: musubi set checkpoint_every_epochs equal to save_every_epochs, without save_every_steps, or remove it.",
        )


OPTIMIZER_PROBLEMS = {Trainer.diffpipe: diffpipe.optimizer_problem, Trainer.musubi: musubi.optimizer_problem}


def optimizer_name(job: Job) -> Iterator[UserError]:
    """Each trainer has its own optimizer names; an unknown one fails only after caching and loading the model."""
    name = job.optimizer.type
    problem = OPTIMIZER_PROBLEMS[job.trainer](name) if name else None
    if problem:
        yield UserError("optimizer.type", *problem)


# images built before runner decided cache reuse itself (runner.job.resolve) skip their caching steps when it is set
RESERVED_ENV = "RUNNER_CACHE_FRESH"


def reserved_env(job: Job) -> Iterator[UserError]:
    if RESERVED_ENV in job.env:
        yield UserError(
            f"env.{RESERVED_ENV}",
            "is runner's own: it would make the trainer skip its caching steps even when the data changed.",
            f"remove {RESERVED_ENV} from env:; runner re-caches exactly when a dataset's fingerprint changed.",
        )


def blocks_to_swap_limit(job: Job) -> Iterator[UserError]:
    n = job.memory.blocks_to_swap
    limit = max_blocks_to_swap(job.trainer, job.task)
    if n > limit:
        yield UserError(
            "memory.blocks_to_swap",
            f"{n} is over the limit for Wan-{job.task.size} ({job.task.num_blocks} blocks) with "
            f"{job.trainer.value}; the trainer asserts blocks_to_swap <= {limit} and stops after loading the model.",
            f"use at most {limit}.",
        )


def pipeline_stages(job: Job) -> Iterator[UserError]:
    """diffusion-pipe's pipeline parallel: stages split the GPUs (train.py: data parallel = GPUs / stages), and
    block swap asserts pipeline_stages == 1 (train.py). musubi-tuner has data parallel (DDP) only."""
    stages, count = job.pipeline_stages, job.gpu_count
    if stages == 1:
        return
    if job.trainer is Trainer.musubi:
        yield UserError("pipeline_stages", f"{stages}, but musubi-tuner trains on several GPUs only by data parallel "
                        "(accelerate's DDP: each GPU a whole copy of the model); it has no pipeline parallel.",
                        "remove pipeline_stages for trainer: musubi (memory: auto or memory.blocks_to_swap makes a large model fit one card), "
                        "or use trainer: diffpipe.")
        return
    if count is not None and count % stages:
        yield UserError("pipeline_stages", f"{stages} does not divide the job's {count} GPUs: diffusion-pipe runs "
                        "GPUs / pipeline_stages data-parallel pipelines of pipeline_stages GPUs each.",
                        f"use a divisor of {count} ({', '.join(str(d) for d in range(1, count + 1) if count % d == 0)}), or change gpus.")
    if stages > job.task.num_blocks:
        yield UserError("pipeline_stages", f"{stages} is more stages than Wan2.1-{job.task.size} has blocks ({job.task.num_blocks}).",
                        f"use at most {job.task.num_blocks}.")
    if job.memory.blocks_to_swap:
        yield UserError("memory.blocks_to_swap", f"{job.memory.blocks_to_swap} with pipeline_stages: {stages}; diffusion-pipe "
                        "asserts 'Block swapping only works with pipeline_stages=1' (train.py) after loading the model.",
                        "use either block swap (pipeline_stages: 1) or pipeline stages (memory.blocks_to_swap: 0).")


def gpus_on_target(r: ResolvedJob) -> Iterator[UserError]:
    """The GPUs the job names must be on the machine it runs on (known when its inventory was read)."""
    inv, job = r.inventory, r.job
    if inv is None or not inv.gpus or job.gpu_count is None:
        return
    there = ", ".join(f"{g.index}: {g.name}" for g in inv.gpus)
    missing = sorted(set(job.gpu_ids or []) - {g.index for g in inv.gpus})
    if missing:
        yield UserError("gpus", f"names device {', '.join(map(str, missing))}, which {r.target} does not have (its GPUs: {there}).",
                        "name device ids from that list (nvidia-smi's indexes), or use a count or `all`.")
    elif job.gpu_count > inv.count:
        yield UserError("gpus", f"{job.gpu_count} GPUs, but {r.target} has {inv.count} ({there}).",
                        f"use at most {inv.count} (or `all`), or run it on a machine with more GPUs (--host NAME).")


def diffpipe_resolutions(job: Job) -> Iterator[UserError]:
    if job.trainer is not Trainer.diffpipe:
        return
    for i, d in enumerate(job.datasets):
        if len(d.resolutions) > DIFFPIPE_MAX_RESOLUTIONS:
            yield UserError(
                f"datasets[{i}].resolutions",
                f"{len(d.resolutions)} resolutions; diffusion-pipe refuses more than {DIFFPIPE_MAX_RESOLUTIONS} "
                "without --i_know_what_i_am_doing, because each one multiplies the cache and the step count.",
                f"keep at most {DIFFPIPE_MAX_RESOLUTIONS} resolutions, or split the data into datasets.",
            )


MOUNT_FIELDS = {"models": "models.root", "cache": "cache", "outputs": "output", "hf-cache": "hf_cache"}


def _field(m: mounts.Mount) -> str:
    return f"datasets[{m.volume.split('/')[1]}].path" if m.volume.startswith("data/") else MOUNT_FIELDS[m.volume]


def mount_folders(job: Job) -> Iterator[UserError]:
    """Folders the containers would write where they must not: a system folder mounted read-write, or folders
    that overlap (runner.mounts.overlap). Compared with symlinks resolved, so a link hides neither; only the
    named folders' own links are followed, never their contents'."""
    table = [dataclasses.replace(m, host=os.path.realpath(m.host)) for m in mounts.folder_mounts(job)]
    system = {m.volume: mounts.system_folder(Path(m.host)) for m in table if not m.read_only}
    for m in table:
        if system.get(m.volume):
            yield UserError(
                _field(m),
                f"{m.host} is {system[m.volume]}; the container would mount it read-write at {m.container}, and the "
                "trainer (as you, or as root) could write anywhere in it.",
                f"point {_field(m)} at a folder of its own, e.g. {m.volume.split('/')[0]}/ beside the job file.",
            )
    for i, a in enumerate(table):
        for b in table[:i]:
            o = mounts.overlap(a, b)
            if o and not (system.get(a.volume) or system.get(b.volume)):  # refused already, with its own fix
                yield UserError(
                    _field(o.inner),
                    f"{o.inner.host} is {'the same folder as' if o.same_folder else 'inside'} {_field(o.outer)} "
                    f"({o.outer.host}); {o.why}.",
                    f"give {_field(o.inner)} and {_field(o.outer)} folders of their own, side by side, neither inside "
                    "the other (e.g. models/, data/clips, cache/, outputs/).",
                )


def diffpipe_shared_dataset_folder(job: Job) -> Iterator[UserError]:
    """diffusion-pipe caches each dataset inside its folder, under one name per model: two datasets on one folder
    would overwrite each other's cache."""
    if job.trainer is not Trainer.diffpipe:
        return
    first: dict[str, int] = {}
    for i, d in enumerate(job.datasets):
        real = os.path.realpath(d.path)
        if real in first:
            yield UserError(
                f"datasets[{i}].path",
                f"{d.path} is the folder of datasets[{first[real]}] too; diffusion-pipe caches each dataset inside its "
                f"folder ({real}/cache/), so the two would overwrite each other's cache files.",
                "make them one dataset (resolutions and frames take lists), or give each its own folder.",
            )
        first.setdefault(real, i)


def dataset_folders(r: ResolvedJob) -> Iterator[UserError]:
    from runner.data.media import folder_problem

    for i, d in enumerate(r.job.datasets):
        if r.folders[i].media is None:
            yield UserError(f"datasets[{i}].path", f"{d.path} {folder_problem(d.path) or 'is not a folder'}.", "point it at the folder of your clips and captions.")
        elif r.folders[i].holds == "empty":
            yield UserError(
                f"datasets[{i}].path",
                f"{d.path} holds no images or videos the trainers read (e.g. .mp4, .webm, .mov, .png, .jpg).",
                "put the media and their caption files in that folder.",
            )
        elif d.kind != "auto" and d.kind != r.folders[i].holds:
            yield dataset_kind_mismatch(i, d.kind, r.folders[i].holds)


_KIND_WORDS = {"video": "only videos", "image": "only images", "mixed": "both images and videos"}


def dataset_kind_mismatch(index: int, declared: str, holds: str) -> UserError:
    """`kind:` says one thing and the folder holds another: the trainers would train on part of it, or on nothing."""
    return UserError(
        f"datasets[{index}].kind",
        f"is {declared}, but the folder holds {_KIND_WORDS[holds]}; the trainers would look in it for "
        f"{_KIND_WORDS[declared].removeprefix('only ')} and leave the rest out or find nothing.",
        f"remove kind: (auto reads it from the folder) or set kind: {holds}.",
    )


def i2v_needs_video(job: Job) -> Iterator[UserError]:
    if not job.task.is_i2v:
        return
    frames = "the first and the last frame of each clip" if job.task.is_flf2v else "the first frame"
    for i, d in enumerate(job.datasets):
        if d.frames == [1]:
            yield UserError(
                f"datasets[{i}].frames",
                f"[1] trains on single images, but {job.task.value} learns motion from {frames}: both "
                "trainers need videos for I2V (diffusion-pipe: 'i2v/flf2v must train on videos').",
                "give video frame counts such as [33] and a folder of videos.",
            )


def task_for_trainer(job: Job) -> Iterator[UserError]:
    """Tasks one trainer cannot train at its pin."""
    if job.trainer is Trainer.musubi and job.task.value in musubi.UNSUPPORTED_TASKS:
        yield UserError("task", f"{job.task.value}: {musubi.UNSUPPORTED_TASKS[job.task.value]}.",
                        f"use trainer: diffpipe for {job.task.value}.")


def expert_choice(job: Job) -> Iterator[UserError]:
    if job.expert is not None and not job.task.has_experts:
        yield UserError("expert", f"is set, but {job.task.value} is one DiT; only Wan2.2 A14B (t2v-A14B, i2v-A14B) has experts.",
                        "remove expert:, or use task t2v-A14B or i2v-A14B.")


def samples_need_t2v(job: Job) -> Iterator[UserError]:
    if job.task.is_wan22 and job.samples.prompts:
        yield UserError(
            "samples.prompts",
            f"runner's samples of {job.task.value} are not built yet: they run musubi's wan_generate_video.py with one DiT, "
            "and Wan2.2 needs its experts (A14B) or a model musubi has no task for (TI2V-5B).",
            "remove samples.prompts for a Wan2.2 job (run wan_generate_video.py --dit --dit_high_noise by hand).",
        )
    elif job.task.is_i2v and job.samples.prompts:
        yield UserError(
            "samples.prompts",
            f"{job.task.value} samples from a start image per prompt, which runner does not pass to the trainer yet.",
            "remove samples.prompts for an I2V job (sample a T2V job, or run wan_generate_video.py --image_path by hand).",
        )


def dataset_contents(r: ResolvedJob) -> Iterator[UserError]:
    """Files the trainer would drop or fail on: videos outside every frame bucket (fps × frames), missing
    captions, colliding stems, I2V folders without videos (runner.data.check reads container metadata only)."""
    from runner.data.check import dataset_problems

    job = r.job
    for i, d in enumerate(job.datasets):
        folder = r.folders[i]
        if folder.media is not None and folder.holds != "empty":
            for e in dataset_problems(d, job.trainer, job.task, (folder.media, folder.ignored)):
                yield UserError(f"datasets[{i}].path", f"{e.where}: {e.problem}", e.fix)


def used_model_files(job: Job, files: modelfiles.ModelFiles) -> dict[str, Path]:
    """Job field → host path of every model file or folder the trainer opens (of an A14B job, the experts it trains)."""
    chosen = experts(job)
    dits = {"models.dit": files.dit if not chosen or "low" in chosen else None,
            "models.dit_high_noise": files.dit_high_noise if "high" in chosen else None}
    if job.trainer is Trainer.diffpipe:
        used = {"models.ckpt_dir": files.ckpt_dir, **dits, "models.t5": files.t5 if files.t5_outside_ckpt else None}
    else:
        used = {**dits, "models.vae": files.vae, "models.t5": files.t5, "models.clip": files.clip}
    return {f: p for f, p in used.items() if p is not None}


def missing_model_files(r: ResolvedJob) -> dict[str, Path]:
    """The model files the job uses that resolving it did not find on its target (job field → path under models.root)."""
    return {field: p for field, p in used_model_files(r.job, r.files).items() if not r.present(p)}


def _unset(field: str, what: str, fix: str) -> Iterator[UserError]:
    yield UserError(field, f"is not set, but {what}.", fix)


DIFFPIPE_CKPT_FIX = (
    "download the official Wan2.1 folder (`runner download` fetches it without the large files that the "
    "ComfyUI ones replace) and set models.ckpt_dir to it."
)


def model_files(r: ResolvedJob) -> Iterator[UserError]:
    """What the model files that are on the target hold, and names that cannot work anywhere."""
    job, files = r.job, r.files
    if job.trainer is Trainer.diffpipe:
        if files.ckpt_dir is None:
            yield from _unset("models.ckpt_dir", "diffusion-pipe's ckpt_path must be the official Wan2.1 folder", DIFFPIPE_CKPT_FIX)
        elif r.kinds.get(files.ckpt_dir) == "folder":
            yield from _diffpipe_ckpt_dir(r, files.ckpt_dir)
    else:
        yield from _musubi_file_names(r)
    field_of = {path: field for field, path in used_model_files(job, files).items()}
    for path, problem in r.headers.items():
        if isinstance(problem, str):  # a file inside ckpt_dir that diffusion-pipe reads is the folder's problem
            yield UserError(field_of.get(path, "models.ckpt_dir"), f"{path} cannot be read as {path.suffix} ({problem}).",
                            "download it again (`runner download` verifies sizes and hashes).")
    yield from _experts(job, files)
    for field, path in used_model_files(job, files).items():
        if field in DIT_FIELDS and isinstance(r.headers.get(path), dict):
            yield from _dit_file(job, path, r.headers[path], field)


DIT_FIELDS = ("models.dit", "models.dit_high_noise")
EXPERT_WORDS = {"models.dit": ("low_noise", "high_noise"), "models.dit_high_noise": ("high_noise", "low_noise")}


def _experts(job: Job, files: modelfiles.ModelFiles) -> Iterator[UserError]:
    """An A14B expert file in the other expert's place. The two experts have the same shapes and keys, so only their
    names (the official folders low_noise_model/high_noise_model, ComfyUI's wan2.2_*_low_noise_* / *_high_noise_*) tell."""
    for field, path in used_model_files(job, files).items():
        if field not in EXPERT_WORDS:
            continue
        own, other = EXPERT_WORDS[field]
        if other in str(path).lower() and own not in str(path).lower():
            yield UserError(field, f"{path} is named as the {other.replace('_', '-')} expert, but {field} is the "
                            f"{own.replace('_', '-')} expert's DiT; training it on the other expert's timesteps makes a LoRA for neither.",
                            f"point {field} at the {own} DiT (the official {own}_model folder or ComfyUI's wan2.2_*_{own}_14B file).")
    if "high" in experts(job) and files.dit_high_noise is None:
        yield from _unset("models.dit_high_noise", f"expert: {job.expert} trains the high-noise expert",
                          "set models.dit_high_noise (a preset fills it once `runner download` has fetched it), or train expert: low.")


_KIND_FIX = {
    "root": "set models.root to the folder that holds the model files (`runner download PRESET --to DIR` fills one).",
    "ckpt_dir": "set models.ckpt_dir to the official Wan2.1 folder (config.json, Wan2.1_VAE.pth, google/); a single DiT file goes in models.dit.",
    "dit": "set models.dit to the DiT .safetensors file itself; an official Wan2.1 folder goes in models.ckpt_dir.",
}
_WHAT = {"folder": "a folder", "file": "a file", "broken link": "a symlink that loops or points nowhere", "special": "a FIFO or device"}
_OUTSIDE = (
    "is a symlink out of models.root; the container mounts only the root (at /models) and cannot follow it.",
    "put the file itself under models.root (move or copy it there), or set models.root to a folder that holds it.",
)


def model_path_kinds(r: ResolvedJob) -> Iterator[UserError]:
    """models.root and ckpt_dir must be folders and the weight files regular files under the root, as the trainers
    open them in the container."""
    files = r.files
    paths = {"root": files.root, **{name: getattr(files, name) for name in modelfiles.FIELDS}}
    for name, path in paths.items():
        kind, expected = r.kinds.get(path), modelfiles.EXPECTED_KIND[name]
        if path is None or kind in (None, "missing", expected) or (kind == "folder" and _expert_folder(r.job, name)):
            continue
        if kind == "outside":
            yield UserError(f"models.{name}", f"{path} {_OUTSIDE[0]}", _OUTSIDE[1])
        else:
            yield UserError(f"models.{name}", f"{path} is {_WHAT[kind]}, but models.{name} must be {_WHAT[expected]} on {r.target}.",
                            _KIND_FIX.get(name, f"set models.{name} to the {name} file itself, relative to models.root."))


def _expert_folder(job: Job, name: str) -> bool:
    """diffusion-pipe takes an official A14B expert folder (config.json and shards) as transformer_path."""
    return job.trainer is Trainer.diffpipe and job.task.has_experts and name in ("dit", "dit_high_noise")


def ckpt_dir_needs(job: Job, files: modelfiles.ModelFiles) -> list[str]:
    """What diffusion-pipe reads from the official folder (names relative to it): config.json, which the A14B
    repositories keep in their expert folders only (models/wan/wan.py falls back to low_noise_model/config.json)."""
    config = "low_noise_model/config.json" if job.task.has_experts else "config.json"
    needed = [config, modelfiles.vae_name(job.task), modelfiles.T5_TOKENIZER]
    if job.task.needs_clip:
        needed += [modelfiles.CLIP, modelfiles.CLIP_TOKENIZER]
    if not files.t5_outside_ckpt:
        needed.append(modelfiles.T5)
    return needed


def _diffpipe_ckpt_dir(r: ResolvedJob, ckpt_dir: Path) -> Iterator[UserError]:
    for name in ckpt_dir_needs(r.job, r.files):
        if not r.present(ckpt_dir / name):
            yield UserError(
                "models.ckpt_dir",
                f"{ckpt_dir} lacks {name}; diffusion-pipe reads it from ckpt_path even when ComfyUI "
                "transformer/T5 files are given, and fails after loading for minutes.",
                DIFFPIPE_CKPT_FIX,
            )


def _musubi_file_names(r: ResolvedJob) -> Iterator[UserError]:
    job, files = r.job, r.files
    t5_header = r.headers.get(files.t5) if files.t5 is not None else None
    if isinstance(t5_header, dict) and "token_embedding.weight" not in t5_header:
        yield UserError(
            "models.t5",
            f"{files.t5.name} is a ComfyUI/Hugging Face text encoder; musubi-tuner loads the T5 strictly with "
            f"Wan's own key names and fails on this file.",
            f"use {modelfiles.T5} from the official Wan2.1 repository.",
        )
    if job.task.needs_clip and files.clip is None:
        yield from _unset("models.clip", "musubi-tuner's I2V training needs the official CLIP (--clip)", "set models.clip or models.ckpt_dir.")
    if files.clip is not None and files.clip.name != modelfiles.CLIP:
        yield UserError(
            "models.clip",
            f"{files.clip.name} is not the official {modelfiles.CLIP}; ComfyUI/Kijai CLIP files hold only the "
            "vision tower and musubi's strict load fails (musubi-tuner #152).",
            f"use {modelfiles.CLIP} from Wan-AI/Wan2.1-I2V-14B-720P.",
        )
    if files.dit is None and "models.dit_high_noise" not in used_model_files(job, files):
        yield from _unset("models.dit", "musubi-tuner needs a DiT file (--dit)", "set models.dit to a bf16 or fp16 Wan DiT .safetensors.")


# what each task's DiT is (weights.WeightsInfo.variant)
VARIANTS = {Task.t2v_1_3b: "t2v", Task.t2v_14b: "t2v", Task.i2v_14b_480p: "i2v", Task.i2v_14b_720p: "i2v",
            Task.t2v_a14b: "t2v", Task.i2v_a14b: "i2v-v2", Task.flf2v_14b: "flf2v", Task.ti2v_5b: "ti2v"}
VARIANT_WORDS = {"t2v": "a T2V", "i2v": "a Wan2.1 I2V", "i2v-v2": "a Wan2.2 I2V (A14B)", "flf2v": "an FLF2V", "ti2v": "a TI2V-5B"}


def _dit_file(job: Job, path: Path, header: dict, field: str = "models.dit") -> Iterator[UserError]:
    info = weights.info(header)
    if info.fp8_scaled:
        yield UserError(
            field,
            f"{path.name} is a ComfyUI fp8_scaled file (fp8 weights with per-tensor scales); neither trainer can "
            "load it: diffusion-pipe rejects it and musubi-tuner does not support it.",
            "use the bf16 or fp16 DiT and set memory.transformer_dtype: float8 to train in fp8.",
        )
        return
    if info.size and info.size != job.task.size:
        family = "Wan2.2" if info.size == "5B" else "Wan2.1"
        yield UserError(
            field,
            f"{path.name} is a {family}-{info.size} DiT but task is {job.task.value}; loading fails with shape mismatches.",
            f"use a {job.task.size} DiT or change task.",
        )
    elif info.size and info.variant != VARIANTS[job.task]:
        kind = VARIANT_WORDS.get(info.variant or "", f"an unknown ({info.in_dim} input channels)")
        yield UserError(field, f"{path.name} is {kind} DiT but task is {job.task.value}, which needs {VARIANT_WORDS[VARIANTS[job.task]]} DiT; "
                        "the trainer would fail on missing or extra weights, or train the wrong model.", "match task and DiT file.")
    yield from _dit_dtype(job, path.name, info.dtype)


def _dit_dtype(job: Job, name: str, file_dtype: str) -> Iterator[UserError]:
    mem = job.memory
    if job.trainer is Trainer.musubi and file_dtype in ("bfloat16", "float16") and file_dtype != mem.dtype:
        yield UserError(
            "memory.dtype",
            f"{mem.dtype} but {name} stores {file_dtype} weights; musubi-tuner asserts that --mixed_precision "
            "matches the DiT file's dtype and stops before training.",
            f"set memory.dtype: {file_dtype}.",
        )


RULES: list[Rule] = [
    frames_4k_plus_1,
    alpha_for_diffpipe,
    save_cadence,
    trainer_only_options,
    optimizer_name,
    blocks_to_swap_limit,
    reserved_env,
    diffpipe_resolutions,
    i2v_needs_video,
    task_for_trainer,
    expert_choice,
    samples_need_t2v,
    mount_folders,
    diffpipe_shared_dataset_folder,
    pipeline_stages,
]
# the rules that read the facts gathered on the target
FACT_RULES: list[FactRule] = [dataset_folders, dataset_contents, model_path_kinds, model_files, gpus_on_target]


def check(r: ResolvedJob) -> None:
    """Raise JobInvalid listing every problem of the resolved job, or return if it is ready to render."""
    errors = [e for rule in RULES for e in rule(r.job)] + [e for rule in FACT_RULES for e in rule(r)]
    if errors:
        raise JobInvalid(errors)
