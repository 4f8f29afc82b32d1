"""resolve(job, target): every fact a job depends on, gathered once on the machine that holds it, and every
decision made once from them; then the checks run on the result, so what runner decides is checked like what
the user wrote.

Facts and where they come from: the target's GPUs and RAM (its Shell, when asked for), the model files' presence
and safetensors headers (its Shell: on a remote host they are the host's own copies), each dataset folder's
listing (this machine, which syncs the datasets to the target), the fingerprints recorded beside the caches
(wherever the caches are), what earlier runs left in the job's output folder (where the outputs are). Decisions:
the memory plan of `memory: auto`, whether to make, regenerate or reuse the caches, and where the run starts (a new
run, or the latest one resumed from its latest checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from runner import mounts
from runner.data import fingerprint, media
from runner.errors import UserError
from runner.gpu.inventory import Inventory, gather, host_ram_gib
from runner.gpu.planner import MemoryPlan, plan_for_job
from runner.job import checks
from runner.models import modelfiles, weights
from runner.shell import Shell
from runner.spec import Job, Trainer
from runner.trainers import diffpipe, musubi
from runner.trainers.resolved import Caches, Earlier, Folder, Outputs, ResolvedJob, Resume


@dataclass(frozen=True)
class Target:
    """The machine a job runs on, as far as resolving it goes."""

    shell: Shell
    name: str = "this machine"
    models: Callable[[Path], str] | None = None  # models.root → that folder on the target; None: the same path (this machine)
    gpus: bool = False  # ask for its GPU inventory and RAM
    # the fingerprint recorded beside each dataset's cache, read where the caches are (None: caches not looked at)
    read_text: Callable[[Path], str | None] | None = None
    cache_dirs: Callable[[Job], list[Path]] | None = None  # each dataset's cache folder there
    output_dir: Callable[[Job], str] | None = None  # the job's output folder there (None: job.output / job.name)


def here(gpus: bool = False) -> Target:
    from runner.shell import LocalShell

    return Target(LocalShell(), gpus=gpus)


def resolve(job: Job, target: Target, vram_gib: float | None = None, ram_gib: float | None = None,
            plan_needed: bool = False, earlier: Earlier | None = None) -> ResolvedJob:
    """The job resolved against `target` and checked (JobInvalid lists every problem). Model files missing on the
    target are not a problem here (`runner validate` runs anywhere); an executor's check_models refuses them.

    vram_gib/ram_gib: memory to plan `memory: auto` for instead of the target's. plan_needed: a `memory: auto`
    job must be planned (else, with no GPU to plan for, it is checked as written). earlier: look at the job's output
    folder on the target and decide where the run starts (None: a new run, the folder not looked at)."""
    asks = target.gpus or (job.memory.auto and vram_gib is None) or job.gpus == "all"
    inventory = gather(target.shell) if asks else None
    job = with_all_gpus(job, inventory, target.name, plan_needed)
    if ram_gib is None and (target.gpus or job.memory.auto):
        ram_gib = host_ram_gib(target.shell)
    if vram_gib is None and inventory is not None and inventory.gpus:
        vram_gib = min(g.memory_gib for g in used_gpus(job, inventory))
    memory_plan = None
    if vram_gib is not None:  # also for memory set by hand: the GPU rules (runner.gpu.envrules) read its low_vram
        memory_plan = plan_for_job(job, vram_gib, ram_gib)
    if job.memory.auto and (memory_plan is not None or plan_needed):
        if memory_plan is None:
            raise no_memory_to_plan(target.name, inventory)
        job = with_memory_plan(job, memory_plan)
    files = modelfiles.resolve(job, _listdir_on(target, job.models.root))
    kinds, headers = _model_facts(job, files, target)
    folders = [_listing(d.path, d.caption_extension) for d in job.datasets]
    r = ResolvedJob(job, target.name, files, folders, kinds, headers, memory_plan=memory_plan, inventory=inventory, ram_gib=ram_gib)
    checks.check(r)
    if target.read_text and target.cache_dirs:
        r = _with_caches(r, target)
    if earlier is not None:
        start = _start(job, _outputs(job, target), earlier)
        r = replace(r, start=start, notes=r.notes + _start_notes(start))
    return r


def with_all_gpus(job: Job, inventory: Inventory | None, target_name: str, plan_needed: bool) -> Job:
    """`gpus: all` resolved once to the device ids of the machine's inventory (plan.json records them as the job's
    gpus); refused where a plan is needed and the machine shows no GPU."""
    if job.gpus != "all":
        return job
    if inventory is not None and inventory.gpus:
        return job.model_copy(update={"gpus": [g.index for g in inventory.gpus]})
    if not plan_needed:
        return job  # validate: the count is unknown, the rules that need it wait for a machine with GPUs
    problem = (inventory.problem if inventory else None) or f"{target_name} shows no GPU"
    raise UserError("gpus", f"is `all`, but {problem}, so there are no GPUs to count.",
                    "run it where the GPUs are (--host NAME), or give a count (gpus: 2) or device ids (gpus: [0, 1]).")


def used_gpus(job: Job, inventory: Inventory) -> list:
    """The inventory's GPUs the job trains on: its device ids, else the first gpu_count (all where ids are not on it:
    the checks refuse those)."""
    by_index = {g.index: g for g in inventory.gpus}
    ids = job.gpu_ids or [g.index for g in inventory.gpus[: job.gpu_count or 1]]
    return [by_index[i] for i in ids if i in by_index] or inventory.gpus


class NothingFits(UserError):
    """No setting fits a `memory: auto` job in the GPU's memory or the host's RAM; `plan` is the planner's best try,
    with suggestions."""

    def __init__(self, job: Job, plan: MemoryPlan):
        self.plan = plan
        if plan.gpu_gib + plan.margin_gib > plan.vram_gib:
            short = f"{plan.vram_gib:g} GiB of GPU memory (best estimate {plan.gpu_gib:.1f} GiB)"
        else:
            short = f"{plan.ram_gib:g} GiB of host RAM (best estimate {plan.host_gib:.0f} GiB, and runner keeps some free)"
        super().__init__(
            "memory: auto",
            f"no setting fits {job.task.value} on {job.trainer.value} in {short}.",
            "; ".join(plan.suggestions) or "use a larger GPU",
        )


def no_memory_to_plan(target_name: str, inventory: Inventory | None) -> UserError:
    return UserError(target_name, ((inventory.problem if inventory else None) or "no GPU found") + ", so there is no memory to plan for.",
                     "pass the card's memory, e.g. --vram 24 (GiB), and --ram for host RAM")


def with_memory_plan(job: Job, p: MemoryPlan) -> Job:
    """A `memory: auto` job with the settings of the memory plan `p` applied."""
    if not p.fits:
        raise NothingFits(job, p)
    update = {"memory": job.memory.model_copy(update=p.memory_update())}
    if p.optimizer_type and job.optimizer.type is None:
        update["optimizer"] = job.optimizer.model_copy(update={"type": p.optimizer_type})
    return job.model_copy(update=update)


def _listdir_on(target: Target, root: Path) -> Callable[[Path], list[str]] | None:
    """Names in a folder under models.root where the target keeps it (None: this machine's own listing)."""
    if target.models is None:
        return None
    models = target.models
    return lambda folder: target.shell.run(["ls", "-1A", "--", str(Path(models(root)) / folder)], timeout=30).stdout.splitlines()


def _listing(folder: Path, caption_extension: str) -> Folder:
    if not folder.is_dir():
        return Folder(None)
    return Folder(*media.media_files(folder, caption_extension))


def _model_facts(job: Job, files: modelfiles.ModelFiles, target: Target) -> tuple[dict[Path, str], dict[Path, dict | str]]:
    """The kind of models.root and each model path on the target (one round trip: modelfiles.path_kinds), the
    headers of the DiT and, for musubi, a .safetensors T5 (one each), and why a .pth the trainer loads would not
    load (one round trip), read there when they are files."""
    wanted = {files.root} | set(checks.used_model_files(job, files).values())
    if job.trainer is Trainer.diffpipe and files.ckpt_dir is not None:
        wanted |= {files.ckpt_dir / name for name in checks.ckpt_dir_needs(job, files)}
    there = {p: _on_target(p, files.root, target) for p in sorted(wanted)}
    kinds = dict(zip(there, modelfiles.path_kinds(target.shell, there[files.root], list(there.values()))))
    to_read = [files.dit, files.dit_high_noise]
    if job.trainer is Trainer.musubi and files.t5 is not None and files.t5.suffix == ".safetensors":
        to_read.append(files.t5)
    headers: dict[Path, dict | str] = {}
    for p in to_read:
        if p is not None and kinds.get(p) == "file":
            try:
                headers[p] = weights.read_header_on(target.shell, there[p])
            except (OSError, weights.NotSafetensors) as e:
                headers[p] = str(e)
    pth = [p for p in there if p.suffix == ".pth" and kinds.get(p) == "file"]
    try:
        problems = weights.pth_problems(target.shell, [there[p] for p in pth])
    except OSError as e:
        problems = [str(e)] * len(pth)
    headers |= {p: problem for p, problem in zip(pth, problems) if problem}
    return kinds, headers


def _on_target(path: Path, root: Path, target: Target) -> str:
    if target.models is None:
        return str(path)
    return str(Path(target.models(root)) / mounts.model_path(root, path).relative_to(mounts.MODELS))


def _with_caches(r: ResolvedJob, target: Target) -> ResolvedJob:
    """Compare each dataset's fingerprint with the one recorded beside its cache on the target: regenerate when
    any changed, reuse when all match, else make them."""
    job, fps, states, notes = r.job, {}, [], []
    for d, folder, cache in zip(job.datasets, r.folders, target.cache_dirs(job)):
        fp = fingerprint.fingerprint(d, job.trainer, job.task, folder.media)
        recorded = target.read_text(cache / fingerprint.FILE_NAME)
        state = fingerprint.state_of(recorded, fp)
        if state is fingerprint.CacheState.stale:
            notes.append(f"{d.path} changed since its cache was made ({'; '.join(fingerprint.why_stale(recorded, fp))}): re-caching")
        states.append(state)
        fps[str(cache)] = fp.model_dump_json(indent=2)
    if fingerprint.CacheState.stale in states:
        caches = Caches.regenerate
    elif all(s is fingerprint.CacheState.fresh for s in states):
        caches = Caches.reuse
        notes.append("the caches match the datasets' fingerprints: they are reused, without caching steps")
    else:
        caches = Caches.make
    return replace(r, caches=caches, fingerprints=fps, notes=notes)


TRAINERS = {Trainer.diffpipe: diffpipe, Trainer.musubi: musubi}


def _outputs(job: Job, target: Target) -> Outputs:
    """The job's output folder on the target: its entries three levels down (one round trip) and readers for the
    few files a resume decision needs."""
    folder = target.output_dir(job) if target.output_dir else str(job.output / job.name)
    listing = target.shell.run(["sh", "-c", '[ -d "$1" ] || exit 0; find "$1" -mindepth 1 -maxdepth 3 -printf "%y\\t%T@\\t%P\\n"', "sh", folder], timeout=60)
    if not listing.ok:
        raise UserError(folder, f"cannot be listed on {target.name} ({listing.stderr.strip()[:200]}).", "check the folder's permissions.")
    entries = {}
    for line in listing.stdout.splitlines():
        if line.count("\t") < 2:
            continue  # the rest of a name holding a newline
        kind, mtime, name = line.split("\t", 2)
        entries[name + ("/" if kind == "d" else "")] = float(mtime)

    def read_text(relative: str) -> str | None:
        r = target.shell.run(["cat", "--", f"{folder}/{relative}"], timeout=30)
        return r.stdout if r.ok else None

    def read_header(relative: str) -> dict | None:
        try:
            return weights.read_header_on(target.shell, f"{folder}/{relative}")
        except (OSError, weights.NotSafetensors):
            return None

    return Outputs(folder, entries, read_text, read_header)


def _start_notes(s: Resume) -> list[str]:
    if s.checkpoint is not None:
        return [f"resuming from {s.checkpoint} (epoch {s.epoch}, step {s.step})"]
    return [f"the earlier files stay; this run writes into {s.run_folder}/"] if s.run_folder else []


class NothingToResume(UserError):
    """--resume of a job whose output folder holds no earlier run."""


def _start(job: Job, out: Outputs, earlier: Earlier) -> Resume:
    """Where the run starts, from what earlier runs left in the output folder: a first run there, a new run that
    cannot overwrite them (--fresh), the latest run resumed (--resume); without either, earlier files refuse the run."""
    trainer = TRAINERS[job.trainer]
    found = trainer.earlier_files(job, out.entries)
    if earlier is Earlier.resume:
        if not found:
            raise NothingToResume(out.folder, "holds no LoRA or checkpoint of an earlier run: there is nothing to resume.",
                            "start the first run with `runner train JOB`.")
        return trainer.resume_from(job, out)
    if found and earlier is Earlier.refuse:
        shown = ", ".join(found[-3:]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise UserError(out.folder, f"holds {len(found)} LoRAs and checkpoints of an earlier run ({shown}); a new run could overwrite them.",
                        "continue the latest run with `runner resume JOB` (or `runner train JOB --resume`), or start a new run "
                        "beside them with `runner train JOB --fresh` (nothing is deleted).")
    return trainer.fresh_run(job, out.entries, datetime.now(timezone.utc).strftime("%Y%m%d_%H-%M-%S"))
