from pathlib import Path

from tests.fakeshell import FakeShell

from runner.executors.doctor import ready, run_checks
from runner.preflight import _DF
from runner.shell import Result

DATA_DF = Result(0, "/dev/nvme0n1 976762584 1 524288000 1% /data\n", "")
DOCKER_OK = {
    ("docker", "info", "--format", "{{json .}}"): Result(0, '{"ServerVersion": "28.2.2", "Runtimes": {"nvidia": {}, "runc": {}}}\n', ""),
    ("sh", "-c", _DF, "sh", "/data"): DATA_DF,
    # the host walks up to the nearest existing folder (/data) before measuring
    ("sh", "-c", _DF, "sh", "/data/new/cache"): DATA_DF,
    ("sh", "-c", _DF, "sh", "/dev/shm"): Result(0, "tmpfs 65536 0 65536 0% /dev/shm\n", ""),
    ("cat", "/proc/meminfo"): Result(0, "MemTotal:       65843212 kB\nMemFree:  1 kB\n", ""),
}


def by_name(checks):
    return {c.name: c for c in checks}


def test_no_gpu_host_says_so_and_is_not_ready():
    checks = run_checks(FakeShell(name="laptop"), volumes={"output": Path("/data")})
    c = by_name(checks)
    assert not ready(checks)
    assert c["gpus"].detail == "no NVIDIA GPU/driver visible on laptop: nvidia-smi is not installed"
    assert "has no `docker` command" in c["docker"].detail and c["docker"].fix
    assert "could not select device driver" in c["nvidia-container-toolkit"].detail


def test_ready_gpu_host():
    checks = run_checks(FakeShell(card="rtx5090", answers=DOCKER_OK), ("musubi",), {"output": Path("/data")}, ram_need_gib=20)
    c = by_name(checks)
    assert ready(checks), [x for x in checks if not x.ok]
    assert "cu128" in c["driver-musubi"].detail
    assert c["disk output"].detail == "500 GiB free at /data"
    assert c["ram"].ok and "63 GiB" in c["ram"].detail
    assert not c["/dev/shm"].ok and "remount" in c["/dev/shm"].fix  # Docker-sized 64 MiB


def test_old_driver_fails_required_check():
    checks = run_checks(FakeShell(card="rtx3090", answers=DOCKER_OK), ("musubi",), {"output": Path("/data")})
    c = by_name(checks)
    assert not ready(checks) and not c["driver-musubi"].ok and "550.54.15" in c["driver-musubi"].detail


def test_missing_volume_dir_measures_its_parent():
    checks = run_checks(FakeShell(card="h100", answers=DOCKER_OK), ("diffpipe",), {"cache": Path("/data/new/cache")})
    assert by_name(checks)["disk cache"].detail == "500 GiB free at /data/new/cache"
