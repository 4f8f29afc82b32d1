"""A Slurm cluster, through its login node over SSH: the job's container runs as a batch job, one task per node.

Everything a remote host does with files is done the same way here (it is a RemoteDocker whose "host" is the login
node): the datasets and the rendered job are synced once into the cluster's shared folders, laid out as on a host
(runner.remote.layout), and `runner pull` reads the outputs from there. What differs is how the container starts:

- the image goes to the shared folder once (`docker save`, <cache>/images/<id>.tar) and each node's batch task loads
  it into that node's engine when the node lacks it;
- each run gets a folder <cache>/slurm/<container>/ holding node.sh (load the image, run the container in the
  foreground, stop it on SIGTERM), batch.sh (srun node.sh on every node), the Slurm job id and the job's log;
- sbatch submits batch.sh (`--requeue`, one task per node); the container's name is the run's on every node (each node
  has its own engine). `runner stop` is scancel; logs are the Slurm output file, followed while the job is queued or runs.

Secrets: sbatch reads the secret values from its stdin into its own environment (RUNNER_SECRETS, base64 of the
`NAME=value` lines), so Slurm carries them in the job's environment, which slurmctld keeps in its own state (not
the user's files) and gives a requeued job again; node.sh takes them out of its environment first thing and writes
them to the container's stdin (images/entrypoint.sh), as a host does. No batch script, argv, shared file or log
holds a value.

Requeue (`scontrol requeue`, a node that went down, preemption): a restarted job must not run its first plan again.
batch.sh counts the job's starts (`attempt`) against the plan runner rendered last (`ready`); a start without a new
plan holds itself (`scontrol requeuehold`) and runner, whenever it looks at the run (`runner ps`, `logs -f`, the
`train` that follows it), renders the resume from the last checkpoint (runner.trainers: Earlier.resume) and releases
it (launch.resume_held).

Multi-node (--nodes N, musubi: runner.job.render.trainer_plan with nodes=N): the job folder holds the plan split in
two (render.node_plans), and batch.sh runs the steps to run once (caching, into the shared cache folder) as one task
on one node, then the training step as one task on every node. Each node's container gets Slurm's own SLURM_NODEID,
SLURM_JOB_NUM_NODES, SLURM_JOB_NODELIST and SLURM_JOB_ID (NODE_ENV), from which /job/multinode_launch.py gives
accelerate the machine's rank, the main process's address (the first node of the list) and a port
(runner.trainers.multinode). Where a node cannot resolve that first node's name (no DNS for node names), node.sh
maps it to the address Slurm reaches it at (its NodeAddr) in the container's /etc/hosts.
"""

from __future__ import annotations

import base64
import posixpath
import shlex
import time
from typing import Iterator

from rich.console import Console

from runner.errors import UserError
from runner.executors import AWAITS_RESUME, ContainerGone
from runner.executors.container import RUN_PLAN, ContainerSpec
from runner.job.render import EVERY_NODE_JSON, ONCE_JSON, PLAN_JSON
from runner.executors.remote import RemoteDocker
from runner.progress import bar as progress_bar
from runner.remote import clusters, image_transfer
from runner.remote.clusters import Cluster, Runtime

# what each node's container is told about its place in a multi-node job: Slurm's variables of the task, as they are
NODE_ENV = ("SLURM_NODEID", "SLURM_JOB_NUM_NODES", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
          "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
POLL_S = 2.0
FOLLOW = """tail -n +1 -F -- "$1" 2>/dev/null & t=$!
last= n=0
while s=$(squeue -h -j "$2" -o "%T %r" 2>/dev/null) && [ -n "$s" ]; do
  case $s in
    RUNNING*|COMPLETING*) ;;
    *) if [ "$s" != "$last" ] || [ "$n" -ge 150 ]; then echo "runner: Slurm job $2 waits: $s"; n=0; fi ;;
  esac
  last=$s n=$((n + 1)); sleep 2
done
sleep 2; kill "$t"
"""
HELD = {"job_requeued_in_held_state", "JobHeldUser"}  # scontrol's reasons for a job batch.sh's requeuehold holds
SLURM_COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "srun")


class SlurmExecutor(RemoteDocker):
    def __init__(self, cluster: Cluster, console: Console | None = None, nodes: int = 1):
        super().__init__(cluster, console)
        self.cluster, self.nodes = cluster, nodes
        self.host = cluster.record_host
        self.image_ids: dict[str, str] = {}  # image ref → its ID and its archive in the shared folder (check_image)
        self.image_tars: dict[str, str] = {}

    @classmethod
    def for_cluster(cls, name: str, nodes: int = 1) -> "SlurmExecutor":
        return cls(clusters.get(name), nodes=nodes)

    # --- the run's folder on the shared filesystem --------------------------------------------------

    def run_dir(self, container: str) -> str:
        return posixpath.join(self.folder("cache"), "slurm", container)

    def _file(self, container: str, name: str) -> str | None:
        r = self.shell.run(["cat", "--", posixpath.join(self.run_dir(container), name)], timeout=30)
        return r.stdout.strip() if r.ok else None

    def job_id(self, container: str) -> str:
        found = self._file(container, "job-id")
        if not found:
            raise ContainerGone(container)
        return found

    # --- before a job starts ------------------------------------------------------------------------

    def check_gpus(self) -> None:
        """GPUs are the scheduler's: sbatch asks for the job's count per node (--gpus-per-node), nothing to check here."""

    def port_free(self, port: int) -> bool:
        return True  # the nodes are not known before Slurm allocates them

    def check_image(self, ref: str, build: str) -> None:
        """The image as a `docker save` archive in the shared folder, once per image ID; each node loads it."""
        from runner.executors.local import client
        from runner.images.builder import find_image

        self.check_folders()
        if self.cluster.runtime is not Runtime.docker:
            raise UserError(f"cluster {self.cluster.name}", f"runs containers with {self.cluster.runtime.value}, and runner starts "
                            "Slurm jobs with docker only so far.", f"use a cluster whose nodes have docker (`runner clusters add "
                            f"{self.cluster.name} … --runtime docker --replace` checks that).")
        image = find_image(client(), ref)
        if image is None:
            raise UserError(f"image {ref}", f"is not built on this machine, so it cannot be sent to {self.host}.", f"run `runner build {build}` here first.")
        tar = posixpath.join(self.folder("cache"), "images", image.id.replace("sha256:", "") + ".tar")
        self.image_ids[ref], self.image_tars[ref] = image.id, tar
        if self.shell.run(["test", "-s", tar], timeout=30).ok:
            return
        with progress_bar("bytes", self.console) as progress:
            task = progress.add_task(f"image → {self.cluster.name}'s shared folder", total=int(image.attrs.get("Size", 0)) or None)
            r = self.shell.feed(["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1.part" && mv -- "$1.part" "$1"', "sh", tar],
                                image.save(chunk_size=image_transfer.CHUNK, named=ref), lambda n: progress.advance(task, n))
        if not r.ok:
            raise UserError(f"cluster {self.cluster.name}", f"could not store the image in {tar} ({r.stderr.strip()[:300]}).",
                            "check the free space of the shared cache folder there, then run again.")

    # --- the job's lifecycle ------------------------------------------------------------------------

    def start(self, spec: ContainerSpec) -> str:
        """Write node.sh and batch.sh into the run's folder and sbatch it; returns the Slurm job id."""
        return self.submit([spec])[0]

    def submit(self, specs: list[ContainerSpec]) -> list[str]:
        """One sbatch for the runs of `specs`: a job array when there are several (task i runs specs[i], its output in
        the first run's folder, task-i.log, linked from its own); returns each run's Slurm id (JOB or JOB_TASK)."""
        runs = [self.run_dir(spec.name) for spec in specs]
        logs = [posixpath.join(run, "log") for run in runs] if len(specs) == 1 else \
            [posixpath.join(runs[0], f"task-{i}.log") for i in range(len(specs))]
        for spec, run, log in zip(specs, runs, logs):
            self.write_text(posixpath.join(run, "node.sh"), node_script(spec, self.image_ids[spec.image], self.image_tars[spec.image]))
            self.write_text(posixpath.join(run, "ready"), "0\n")
            if log != posixpath.join(run, "log"):
                self.shell.run(["ln", "-sfn", "--", log, posixpath.join(run, "log")], timeout=30)
        batch = posixpath.join(runs[0], "batch.sh")
        self.write_text(batch, batch_script(runs, [job_folder(spec) for spec in specs]))
        argv = ["sbatch", "--parsable", "--job-name", specs[0].name, "--nodes", str(self.nodes), "--ntasks-per-node", "1",
                "--output", logs[0] if len(specs) == 1 else posixpath.join(runs[0], "task-%a.log"),
                "--open-mode", "append", "--requeue", "--chdir", runs[0]]
        argv += [f"--array=0-{len(specs) - 1}"] if len(specs) > 1 else []
        argv += ["--partition", self.cluster.partition] if self.cluster.partition else []
        argv += ["--account", self.cluster.account] if self.cluster.account else []
        gpus = max(spec.gpu_count for spec in specs)
        argv += [f"--gpus-per-node={gpus}"] if specs[0].gpus and gpus else []
        # one line on sbatch's stdin: each run's secrets, base64, comma-separated (batch.sh picks its task's)
        secrets = ",".join(base64.b64encode(spec.secrets_on_stdin()).decode() for spec in specs) + "\n"
        r = self.shell.run(["sh", "-c", 'IFS= read -r RUNNER_SECRETS; export RUNNER_SECRETS; exec "$@"', "sh", *argv, batch],
                           timeout=120, stdin=secrets.encode())
        job_id = r.stdout.strip().split(";")[0]
        if not r.ok or not job_id.isdigit():
            raise UserError(f"cluster {self.cluster.name}", f"sbatch refused the job: {(r.stderr or r.stdout).strip()[:400]}",
                            "read Slurm's message (partition, account, limits); `runner clusters list` shows what runner submits with.")
        ids = [job_id] if len(specs) == 1 else [f"{job_id}_{i}" for i in range(len(specs))]
        for run, slurm_id in zip(runs, ids):
            self.write_text(posixpath.join(run, "job-id"), slurm_id + "\n")
        what = f"job {job_id}" if len(specs) == 1 else f"job array {job_id} ({len(specs)} tasks)"
        self.console.print(f"submitted Slurm {what} to {self.cluster.name} ({self.nodes} node{'s' * (self.nodes > 1)} each)")
        return ids

    def slurm_state(self, container: str) -> dict[str, str]:
        """`scontrol show job` of the run's job as a dict (JobState, Reason, ExitCode, Restarts, NodeList, …); {} when Slurm
        no longer knows it (ended longer ago than its MinJobAge)."""
        r = self.shell.run(["scontrol", "show", "job", "--oneliner", self.job_id(container)], timeout=30)
        if not r.ok:
            if "Invalid job id" in r.stderr:
                return {}
            raise UserError(f"cluster {self.cluster.name}", f"scontrol could not read job {self.job_id(container)} ({r.stderr.strip()[:200]}).",
                            "check the cluster (`ssh LOGIN scontrol ping`), then run again.")
        return dict(field.split("=", 1) for field in r.stdout.split() if "=" in field)

    def state(self, container: str) -> dict:
        """The run's state as Docker's State reads (Running, Status), with Slurm's own beside it; {} without a run."""
        try:
            s = self.slurm_state(container)
        except ContainerGone:
            return {}
        if not s:
            return {"Running": False, "Status": "exited"} if self._file(container, "exit") is not None else {}
        active = s.get("JobState") in ACTIVE
        return {"Running": active, "Status": "running" if active else "exited", "Slurm": s.get("JobState", ""),
                "Reason": s.get("Reason", ""), "Restarts": int(s.get("Restarts", "0") or 0), "Nodes": s.get("NodeList", ""),
                "AwaitsResume": active and s.get("Reason") in HELD and self._file(container, "attempt") not in (None, self._file(container, "ready"))}

    def logs(self, container: str, follow: bool = True) -> Iterator[str]:
        log = posixpath.join(self.run_dir(container), "log")
        if not follow:
            r = self.shell.run(["sh", "-c", 'cat -- "$1" 2>/dev/null; true', "sh", log], timeout=120)
            yield from r.stdout.splitlines()
            return
        # tail the output file while squeue lists the job (queued, running, requeued), saying when it waits and why
        # (on a change, and every 5 minutes: a queued job is not a hung trainer), then to the file's end
        yield from self.shell.lines(["sh", "-c", FOLLOW, "sh", log, self.job_id(container)])

    def wait(self, container: str) -> int:
        """The exit code of the run: the container's (batch.sh records it), else what Slurm says (128 + a signal)."""
        while (s := self.state(container)).get("Running"):
            time.sleep(POLL_S)
        if not s:
            raise ContainerGone(container)
        recorded = self._file(container, "exit")
        if recorded is not None and recorded.lstrip("-").isdigit():
            return int(recorded)
        code, _, signal = self.slurm_state(container).get("ExitCode", "1:0").partition(":")
        return 128 + int(signal) if signal not in ("", "0") else int(code or 1)

    def stop(self, container: str, timeout: int = 30) -> None:
        """scancel: Slurm sends SIGTERM to every task (node.sh stops its container) and SIGKILL after its KillWait."""
        self.shell.run(["scancel", self.job_id(container)], timeout=60)
        deadline = time.monotonic() + timeout + 60
        while self.state(container).get("Running") and time.monotonic() < deadline:
            time.sleep(POLL_S)

    def remove(self, container: str) -> None:
        """Cancel a run still queued or running (a start that was interrupted); the containers remove themselves."""
        try:
            if self.state(container).get("Running"):
                self.shell.run(["scancel", self.job_id(container)], timeout=60)
        except ContainerGone:
            pass

    def release(self, spec: ContainerSpec) -> None:
        """Let a held requeued run start again, as `spec` (its plan just rendered for the resume: launch.resume_held)."""
        container = spec.name
        self.write_text(posixpath.join(self.run_dir(container), "node.sh"), node_script(spec, self.image_ids[spec.image], self.image_tars[spec.image]))
        self.write_text(posixpath.join(self.run_dir(container), "ready"), (self._file(container, "attempt") or "0") + "\n")
        r = self.shell.run(["scontrol", "release", self.job_id(container)], timeout=60)
        if not r.ok:
            raise UserError(f"cluster {self.cluster.name}", f"scontrol release {self.job_id(container)} failed ({r.stderr.strip()[:200]}).",
                            f"release it by hand: `ssh {self.cluster.ssh} scontrol release {self.job_id(container)}`.")


def job_folder(spec: ContainerSpec) -> str:
    """The run's job folder (/job in its container) on the shared filesystem."""
    return next(m.host for m in spec.mounts if m.container == "/job")


def node_script(spec: ContainerSpec, image_id: str, image_tar: str) -> str:
    """One Slurm task: `node.sh PLAN` loads the image into the node's engine if it lacks it, then runs the plan
    /job/PLAN (a file of the job folder: runner.job.render.write) in the container in the foreground (removed when it
    exits); SIGTERM (scancel, requeue) stops the container before Slurm's SIGKILL. In a job of several nodes the
    container gets NODE_ENV, and the first node's name resolves in it."""
    assert spec.command == RUN_PLAN, "a Slurm task runs a plan of the job folder"
    argv = spec.cli_argv(detach=False)
    at_image = len(argv) - len(spec.command) - 1
    node_env = " ".join(f"--env {k}" for k in NODE_ENV)  # docker takes each value from node.sh's environment
    run = f'{shlex.join(argv[:at_image])} {node_env} "${{first_node[@]}}" {shlex.join(argv[at_image:-1])} "/job/$plan"'
    q = shlex.quote
    return f"""#!/bin/bash
# written by runner: a task of {spec.name} (usage: node.sh PLAN)
set -u
plan=$1
secrets=${{RUNNER_SECRETS:-}}; unset RUNNER_SECRETS  # the values never reach a child's environment or argv
image={q(spec.image)} image_id={q(image_id)} tar={q(image_tar)} name={q(spec.name)}
first_node=()
if [ "${{SLURM_JOB_NUM_NODES:-1}}" -gt 1 ]; then
  first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
  if ! getent hosts "$first" >/dev/null; then
    address=$(scontrol -o show node "$first" | grep -o ' NodeAddr=[^ ]*' | cut -d= -f2)
    [ -n "$address" ] && [ "$address" != "$first" ] && first_node=(--add-host "$first:$address")
  fi
fi
if ! command -v docker >/dev/null; then echo "runner: $(hostname) has no docker"; exit 127; fi
if [ "$(docker image inspect --format '{{{{.Id}}}}' "$image" 2>/dev/null)" != "$image_id" ]; then
  echo "runner: loading $image on $(hostname)"
  docker load --input "$tar" >/dev/null || {{ echo "runner: docker load of $tar failed on $(hostname)"; exit 125; }}
fi
docker rm --force "$name" >/dev/null 2>&1  # left by an attempt that was killed
trap 'docker stop --time 30 "$name" >/dev/null 2>&1' TERM INT
if [ -n "$secrets" ]; then
  printf '%s' "$secrets" | base64 -d | {run} &
else
  {run} </dev/null &
fi
pid=$!
wait "$pid"; rc=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done  # a trap ends the first wait early
exit "$rc"
"""


def batch_script(runs: list[str], jobs: list[str]) -> str:
    """Run the plan on the allocation's nodes, once per plan: a restart (requeue) holds itself until runner has
    rendered its resume (SlurmExecutor.release). A multi-node run's job folder holds its plan split in two
    (runner.job.render.write): the steps to run once go to one node, then the training step to every node; else
    plan.json runs on the one node. The exit code is kept in `exit`. For a job array, task i runs runs[i] (job
    folder jobs[i]) with its own secrets (the i-th field of RUNNER_SECRETS)."""
    return f"""#!/bin/bash
# written by runner: Slurm's batch script of {'one run' if len(runs) == 1 else f'a job array of {len(runs)} runs'}
runs=({' '.join(shlex.quote(run) for run in runs)})
jobs=({' '.join(shlex.quote(job) for job in jobs)})
task=${{SLURM_ARRAY_TASK_ID:-0}}
run=${{runs[$task]}} job=${{jobs[$task]}}
IFS=, read -ra secrets <<< "${{RUNNER_SECRETS:-}}"
export RUNNER_SECRETS=${{secrets[$task]:-}}
unset secrets
attempt=$(cat "$run/attempt" 2>/dev/null || echo 0)
if [ "$attempt" != "$(cat "$run/ready" 2>/dev/null)" ]; then
  echo "{AWAITS_RESUME} Slurm restarted job $SLURM_JOB_ID; it waits, held, until runner renders its resume from the last checkpoint (runner ps, runner logs -f)"
  scontrol requeuehold "$SLURM_JOB_ID"
  exit 0
fi
echo "$((attempt + 1))" > "$run/attempt"
rm -f "$run/exit"
echo "runner: Slurm job $SLURM_JOB_ID, start $((attempt + 1)), nodes $SLURM_JOB_NODELIST"
if [ -e "$job/{EVERY_NODE_JSON}" ]; then
  rc=0
  if [ -e "$job/{ONCE_JSON}" ]; then
    echo "runner: the steps that run once, on one node"
    srun --nodes=1 --ntasks=1 --kill-on-bad-exit=1 bash "$run/node.sh" {ONCE_JSON}
    rc=$?
  fi
  if [ "$rc" = 0 ]; then
    echo "runner: training on $SLURM_JOB_NUM_NODES nodes, one task each"
    srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash "$run/node.sh" {EVERY_NODE_JSON}
    rc=$?
  fi
else
  srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash "$run/node.sh" {PLAN_JSON}
  rc=$?
fi
echo "$rc" > "$run/exit.part" && mv "$run/exit.part" "$run/exit"
exit "$rc"
"""


def preflight(cluster: Cluster, shell) -> dict:
    """The login node has Slurm's commands; one compute node of the partition (srun) has the cluster's runtime.
    Returns what was found: {"login": [commands], "node": name, "runtimes": [found on the node]}."""
    r = shell.run(["sh", "-c", 'for c do command -v "$c" >/dev/null || printf "%s\\n" "$c"; done', "sh", *SLURM_COMMANDS], timeout=30)
    if r.stdout.strip():
        raise UserError(f"cluster {cluster.name}", f"the login node {cluster.ssh} has no {', '.join(r.stdout.split())}: it is not a Slurm login node.",
                        "give the login node of a Slurm cluster with --login (`which sbatch` works there).")
    argv = ["srun", "--nodes", "1", "--ntasks", "1", "--immediate=120", "--time", "2"]
    argv += ["--partition", cluster.partition] if cluster.partition else []
    argv += ["--account", cluster.account] if cluster.account else []
    probe = 'hostname; for r in docker enroot apptainer; do command -v "$r" >/dev/null && printf "%s\\n" "$r"; done; true'
    r = shell.run([*argv, "sh", "-c", probe], timeout=180)
    if not r.ok:
        raise UserError(f"cluster {cluster.name}", f"srun on a compute node failed: {(r.stderr or r.stdout).strip()[:400]}",
                        "check the partition and account (`sinfo`, `sacctmgr show assoc user=$USER` on the login node), or try again "
                        "when a node is free.")
    node, *found = r.stdout.split()
    if cluster.runtime.value not in found:
        raise UserError(f"--runtime {cluster.runtime.value}", f"is not on the compute node {node} of cluster {cluster.name} (it has: "
                        f"{', '.join(found) or 'no container runtime runner knows'}).",
                        f"use --runtime {found[0]}." if found else "install docker, enroot or apptainer on the compute nodes.")
    return {"node": node, "runtimes": found}
