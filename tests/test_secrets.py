"""Secrets never leave the trainer's environment: a run with planted values, watched everywhere they could leak.

Planted: two job `env:` secrets (HF_TOKEN and a *_PASSWORD), PIP_INDEX_URL and HF_ENDPOINT with credentials in
runner's own environment, and a Hugging Face login token file. While `runner --debug train` runs (real Docker engine,
stand-in image; with --host, an SSH test host, whose processes share this machine's /proc) every process's argv is
read many times a second and the container is inspected; afterwards every file under the state, job, data, cache and
output folders (here and on the host), `docker history` and the image's config, runner's output and the container's
log are searched. The trainer's own environment, read from /proc, must hold every value.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from runner.executors.container import LABEL_JOB, LABEL_RECORD, ContainerSpec
from tests.dockerfixtures import REPO, require_docker, runner, runner_env
from tests.remotefixtures import add_host, engine, host_dirs
from tests.test_remote import remote_models  # noqa: F401 (fixture: stand-in images built, models on the hosts)

MUSUBI = "examples/t2v-1.3B-musubi.yaml"
TRAINER_MARK = "musubi_tuner/wan_"  # in the argv of each stand-in musubi step: cache latents, cache text, train


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> None:
    require_docker()
    r = runner(["build", "musubi"], runner_env(tmp_path_factory.mktemp("images")))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


class Planted:
    """Unique secret values and where each one goes."""

    def __init__(self, tmp: Path):
        tag = uuid.uuid4().hex
        self.job = {"HF_TOKEN": f"hf_job{tag}", "DB_PASSWORD": f"pw-job-{tag}"}
        self.process = {"PIP_INDEX_URL": f"https://me:pip{tag}@pypi.example/simple", "HF_ENDPOINT": f"https://u:ep{tag}@hf.example"}
        self.token_file = f"hf_file{tag}"
        self.hf_home = tmp / "hf"
        self.hf_home.mkdir()
        (self.hf_home / "token").write_text(self.token_file)
        (self.hf_home / "token").chmod(0o600)

    @property
    def container_env(self) -> dict[str, str]:
        return {**self.job, **self.process}

    @property
    def values(self) -> list[str]:
        """The part of each value that is secret (a URL's password), so a redacted URL does not count as a leak."""
        return [*self.job.values(), *(v.split("://", 1)[1].split("@")[0].split(":")[1] for v in self.process.values()), self.token_file]

    def leaks(self, text: str) -> list[str]:
        return [v for v in self.values if v in text]

    def job_file(self, workspace: Path, name: str) -> Path:
        job = workspace / "examples" / f"{name}.yaml"
        env = "".join(f"  {k}: '{v}'\n" for k, v in self.job.items())
        job.write_text((workspace / MUSUBI).read_text().replace("name: ball-1p3b", f"name: {name}")
                       + f"env:\n{env}  STANDIN_STEP_SECONDS: '0.3'\n")
        return job


class Watch(threading.Thread):
    """Reads every process's argv (and the trainer's environment) and inspects the job's container until stopped."""

    def __init__(self, planted: Planted, docker_client, job_name: str):
        super().__init__(daemon=True)
        self.planted, self.client, self.job_name = planted, docker_client, job_name
        self.argv_leaks: list[str] = []
        self.trainer_env: dict[str, str] = {}
        self.inspected: list[dict] = []
        self.engine_files: set[str] = set()  # the engine's own files of the container (config.v2.json, its log), read as it ran
        self.engine_file_leaks: list[str] = []
        self.engine_root = Path(docker_client.info()["DockerRootDir"])
        self.container_log = ""
        self.scans = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self._scan_processes()
            self._inspect()
            self.scans += 1
            time.sleep(0.01)

    def _scan_processes(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if self.planted.leaks(argv):
                    self.argv_leaks.append(f"{pid}: {argv}")
                if TRAINER_MARK in argv:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    self.trainer_env.update(dict(e.decode(errors="replace").split("=", 1) for e in environ if b"=" in e))
            except OSError:
                continue  # the process ended

    def _inspect(self) -> None:
        import docker

        api = self.client.api
        for c in api.containers(all=True, filters={"label": LABEL_RECORD}):
            if c["Labels"].get(LABEL_RECORD, "").split("-")[0] != self.job_name:  # record ids start with the job's name
                continue
            try:
                self.container_log = api.logs(c["Id"]).decode(errors="replace")
                self.inspected.append(api.inspect_container(c["Id"]))
            except docker.errors.APIError:
                continue  # it is being removed
            for f in (self.engine_root / "containers" / c["Id"]).rglob("*"):
                try:
                    if f.is_file() and f.stat().st_size < 1 << 24:
                        self.engine_files.add(f.name)
                        if self.planted.leaks(f.read_text(errors="replace")):
                            self.engine_file_leaks.append(str(f))
                except OSError:
                    continue


def _run_watched(planted: Planted, args: list, env: dict, cwd: Path, docker_client, name: str) -> tuple[subprocess.CompletedProcess, Watch]:
    watch = Watch(planted, docker_client, name)
    watch.start()
    try:
        r = runner(["--debug", *args], env, cwd=cwd)
    finally:
        watch.done.set()
        watch.join()
        for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={name}"}):  # a run that failed midway
            c.remove(force=True)
    return r, watch


def _file_leaks(planted: Planted, roots: list[Path], skip: set[Path]) -> list[str]:
    found = []
    for root in roots:
        for f in [root, *root.rglob("*")] if root.exists() else []:
            if f.is_file() and f not in skip and planted.leaks(f.read_text(errors="replace")):
                found.append(str(f))
    return found


def _check(planted: Planted, r: subprocess.CompletedProcess, watch: Watch, image_client, roots: list[Path], skip: set[Path]) -> list[dict]:
    """Every check the run must pass; returns the container's mounts as it was inspected."""
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert watch.scans > 50 and watch.inspected, f"the watch saw the run ({watch.scans} scans, {len(watch.inspected)} inspections)"
    assert not watch.argv_leaks, f"a secret in a process's argv: {watch.argv_leaks[:3]}"
    for k, v in planted.container_env.items():
        assert watch.trainer_env.get(k) == v, f"the trainer's environment lacks {k}"
    attrs = watch.inspected[-1]
    assert not planted.leaks(json.dumps(watch.inspected)), "`docker inspect` shows a secret"
    assert "config.v2.json" in watch.engine_files and not watch.engine_file_leaks, f"the engine's files: {watch.engine_file_leaks}"
    names = [e.split("=", 1)[1].split() for e in attrs["Config"]["Env"] if e.startswith("RUNNER_SECRET_ENV=")]
    assert names and sorted(names[0]) == sorted(planted.container_env), "the container is told the secrets' names only"
    assert watch.container_log and not planted.leaks(watch.container_log), "the container's log, while it ran"
    (kept,) = roots[0].glob("state/jobs/*/train.log")
    assert "[runner] done" in kept.read_text(), "its whole log, kept by runner (searched with the files below)"
    assert not planted.leaks(r.stdout + r.stderr), "runner's output (--debug) shows a secret"
    image = image_client.images.get(attrs["Config"]["Image"])
    assert not planted.leaks(json.dumps([image.history(), image.attrs])), "`docker history` or the image's config shows a secret"
    assert not _file_leaks(planted, roots, skip)
    return attrs["Mounts"]


def test_a_local_run_leaks_no_secret(images, workspace, tmp_path):
    import docker

    planted = Planted(tmp_path)
    name = f"sec{uuid.uuid4().hex[:8]}"
    job = planted.job_file(workspace, name)
    env = runner_env(tmp_path, **planted.process, HF_HOME=str(planted.hf_home))
    r, watch = _run_watched(planted, ["train", job], env, workspace, docker.from_env(), name)
    mounts = _check(planted, r, watch, docker.from_env(), [tmp_path], skip={job, planted.hf_home / "token"})
    token = [m for m in mounts if m["Destination"] == "/hf-cache/token"]
    assert len(token) == 1 and token[0]["RW"] is False, f"the HF token file is mounted read-only: {mounts}"
    assert next(m for m in mounts if m["Destination"] == "/hf-cache")["RW"] is True


def test_a_remote_run_leaks_no_secret(remote_models, workspace, tmp_path):  # noqa: F811
    planted = Planted(tmp_path)
    name = f"sec{uuid.uuid4().hex[:8]}"
    job = planted.job_file(workspace, name)
    env = runner_env(tmp_path, **planted.process, HF_HOME=str(planted.hf_home), XDG_CONFIG_HOME=str(tmp_path / "config"))
    dirs = host_dirs("gpu01")
    add_host(env, "gpu01", "gpu01", remote_models.format(host="gpu01"), dirs)
    try:
        r, watch = _run_watched(planted, ["train", job, "--host", "gpu01"], env, workspace, engine("gpu01"), name)
        host_roots = [Path(d) for d in dirs.values()] + [Path("/var/log/runner-test-gpu01-sshd.log")]
        mounts = _check(planted, r, watch, engine("gpu01"), [tmp_path, *host_roots], skip={job, planted.hf_home / "token"})
    finally:
        for d in dirs.values():
            subprocess.run(["rm", "-rf", d], check=False)
    assert not [m for m in mounts if m["Destination"].startswith("/hf-cache/")], "this machine's HF login stays here"


def test_a_container_started_again_outside_runner_gets_no_secret_and_says_so(images, tmp_path):
    """Secrets are given at every start by runner; `docker start` of a finished job's container gets none."""
    import hashlib

    from runner.executors.local import LocalDocker
    from runner.images import builder

    pins = builder.load_pins("musubi", pins_file=REPO / "tests" / "standin" / "pins.toml")
    ca = Path(runner_env(tmp_path).get("RUNNER_CA_BUNDLE", "")) or None
    secret = f"hf_{uuid.uuid4().hex}"
    spec = ContainerSpec(image=builder.image_ref(pins, ca), name=f"runner-sectest-{uuid.uuid4().hex[:8]}",
                         command=["sh", "-c", 'printf %s "$HF_TOKEN" | sha256sum'], mounts=[], env={"HF_TOKEN": secret, "RUNNER_STDIN_WAIT_S": "2"},
                         user=f"{os.getuid()}:{os.getgid()}", workdir="/", gpus=False)
    ex = LocalDocker()
    ex.start(spec)
    try:
        assert ex.wait(spec.name) == 0
        assert hashlib.sha256(secret.encode()).hexdigest() in "\n".join(ex.logs(spec.name, follow=False)), "the first start got the secret"
        ex.client.containers.get(spec.name).start()
        assert ex.wait(spec.name) == 125
        log = "\n".join(ex.logs(spec.name, follow=False))
        assert "expects its secrets (HF_TOKEN) on stdin and got 0 of 1" in log and "start the job with runner" in log
    finally:
        ex.remove(spec.name)


@pytest.mark.parametrize("line,said", [
    ('HF_TOKEN: "hf_one\\nhf_two"', ["env HF_TOKEN", "line break", "remove it from the value"]),
    ("RUNNER_SECRET_ENV: HF_TOKEN", ["env.RUNNER_SECRET_ENV", "is runner's own", "remove RUNNER_SECRET_ENV from env:"]),
])
def test_env_that_would_break_the_secrets_path_is_refused_before_anything_starts(images, workspace, tmp_path, line, said):
    import docker

    name = f"sec{uuid.uuid4().hex[:8]}"
    job = workspace / "examples" / "broken.yaml"
    job.write_text((workspace / MUSUBI).read_text().replace("name: ball-1p3b", f"name: {name}") + f"env:\n  {line}\n")
    r = runner(["train", job], runner_env(tmp_path), cwd=workspace)
    assert r.returncode == 2, r.stdout + r.stderr
    assert all(s in r.stderr for s in said), r.stderr
    assert not list(tmp_path.glob("state/jobs/*")), "no record"
    assert not docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_JOB}={name}"}), "no container"


class PasswordIndex:
    """A pip index on 127.0.0.1 that wants a password: its pages are PyPI's (their files stay on PyPI's file host)."""

    def __init__(self, password: str):
        import base64
        import http.server
        import urllib.request

        wanted = "Basic " + base64.b64encode(f"me:{password}".encode()).decode()
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.headers.get("Authorization") != wanted:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="test"')
                    self.end_headers()
                    return
                index.served += 1
                upstream = urllib.request.Request("https://pypi.org" + self.path, headers={"Accept": self.headers.get("Accept", "*/*")})
                with urllib.request.urlopen(upstream, timeout=60) as page:
                    body, kind = page.read(), page.headers.get("Content-Type", "text/html")
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.served = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://me:{password}@127.0.0.1:{self.server.server_port}/simple"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_build_from_an_index_with_a_password_keeps_it_out_of_the_image(images, tmp_path):
    """PIP_INDEX_URL with credentials: the build installs through that index, and neither `docker history`, the
    image's config nor any byte of its layers (`docker save`) holds the password."""
    import docker

    password = f"pw{uuid.uuid4().hex}"
    index = PasswordIndex(password)
    variant = f"sectest{uuid.uuid4().hex[:8]}"  # its own repository (runner-musubi-<variant>), removed afterwards
    standin = REPO / "tests" / "standin"
    pins = tmp_path / "pins.toml"
    table = (standin / "pins.toml").read_text().split("[musubi]", 1)[1]
    table = table.replace('trainer_src = "musubi-tuner"', f'trainer_src = "{standin / "musubi-tuner"}"')
    pins.write_text(f"[musubi-{variant}]" + table.replace('requirements = "requirements.lock"', f'requirements = "{standin / "requirements.lock"}"'))
    client = docker.from_env()
    try:
        r = runner(["build", "musubi", "--variant", variant], runner_env(tmp_path, RUNNER_PINS=str(pins), PIP_INDEX_URL=index.url))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert index.served >= 7, "pip read every locked package's page from the index, with its password"
        image = client.images.get(f"runner-musubi-{variant}:latest")
        assert password not in json.dumps([image.history(), image.attrs]), "`docker history` or the image's config"
        assert password not in r.stdout + r.stderr, "the build log"
        tail, scanned = b"", 0
        for chunk in client.api.get_image(image.id, chunk_size=1 << 20):  # every layer, as `docker save` writes it
            assert password.encode() not in tail + chunk, "a layer holds the password"
            tail, scanned = chunk[-len(password):], scanned + len(chunk)
        assert scanned > 100 << 20
    finally:
        index.close()
        for tag in {t for i in client.images.list(name=f"runner-musubi-{variant}") for t in i.tags}:
            client.images.remove(tag, force=True)
