"""GPU inventory of a host, read from nvidia-smi through a Shell (local now, SSH later).

Three outputs are combined: the CSV query (name, memory, compute capability, driver), the XML report
(the CUDA version the driver supports) and the topology matrices (`topo -m` links, `topo -p2p r` P2P).
A host without nvidia-smi, or where it fails, gets an inventory with no GPUs and `problem` set.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from pydantic import BaseModel, ConfigDict

from runner.shell import Shell

QUERY_FIELDS = "index,name,memory.total,driver_version,compute_cap,pci.bus_id"


class Gpu(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    name: str
    memory_mib: int
    compute_capability: str  # "8.9"
    pci_bus_id: str = ""

    @property
    def sm(self) -> int:
        major, minor = self.compute_capability.split(".")
        return int(major) * 10 + int(minor)

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def is_blackwell(self) -> bool:
        return self.sm >= 100

    @property
    def is_geforce_rtx_40(self) -> bool:
        return re.search(r"GeForce RTX 40\d\d", self.name) is not None


class Inventory(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str
    gpus: list[Gpu] = []
    driver_version: str | None = None
    cuda_version: str | None = None  # the newest CUDA the driver supports
    links: dict[str, str] = {}  # "0-1" -> NV4 / PIX / PXB / PHB / NODE / SYS
    p2p: dict[str, str] = {}  # "0-1" -> OK / NS / CNS / GNS / TNS / U
    problem: str | None = None

    @property
    def count(self) -> int:
        return len(self.gpus)

    def p2p_broken(self) -> list[str]:
        """GPU pairs whose P2P read status is known and not OK."""
        return sorted(pair for pair, status in self.p2p.items() if status != "OK")


def parse_query_csv(text: str) -> tuple[list[Gpu], str | None]:
    """(GPUs, driver version) from `nvidia-smi --query-gpu=QUERY_FIELDS --format=csv`."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return [], None
    header = [h.strip() for h in lines[0].split(",")]
    gpus, driver = [], None
    for line in lines[1:]:
        row = dict(zip(header, (c.strip() for c in line.split(","))))
        driver = row.get("driver_version", driver)
        gpus.append(Gpu(index=int(row["index"]), name=row["name"], memory_mib=int(row["memory.total [MiB]"].split()[0]),
                        compute_capability=row["compute_cap"], pci_bus_id=row.get("pci.bus_id", "")))
    return gpus, driver


def parse_xml(text: str) -> tuple[str | None, str | None]:
    """(driver version, CUDA version) from `nvidia-smi -q -x`."""
    root = ET.fromstring(text)
    return root.findtext("driver_version"), root.findtext("cuda_version")


def parse_matrix(text: str) -> dict[str, str]:
    """GPU-to-GPU cells of a `nvidia-smi topo` matrix, keyed "i-j" with i < j."""
    rows = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in text.splitlines()]
    header = next((r.split() for r in rows if r.strip().startswith("GPU0")), None)
    if header is None:
        return {}
    gpu_cols = [h for h in header if re.fullmatch(r"GPU\d+", h)]
    cells = {}
    for r in rows:
        parts = r.split()
        if parts and re.fullmatch(r"GPU\d+", parts[0]) and len(parts) > len(gpu_cols):
            i = int(parts[0][3:])
            for col, value in zip(gpu_cols, parts[1:]):
                j = int(col[3:])
                if i < j:
                    cells[f"{i}-{j}"] = value
    return cells


def gather(shell: Shell) -> Inventory:
    q = shell.run(["nvidia-smi", f"--query-gpu={QUERY_FIELDS}", "--format=csv"], timeout=30)
    if q.returncode == 127:
        return Inventory(host=shell.name, problem=f"no NVIDIA GPU/driver visible on {shell.name}: nvidia-smi is not installed")
    if not q.ok:
        detail = (q.stderr or q.stdout).strip().splitlines()
        return Inventory(host=shell.name, problem=f"no NVIDIA GPU/driver visible on {shell.name}: nvidia-smi failed"
                         + (f" ({detail[0]})" if detail else ""))
    gpus, q_driver = parse_query_csv(q.stdout)
    if not gpus:
        return Inventory(host=shell.name, problem=f"no NVIDIA GPU/driver visible on {shell.name}: nvidia-smi lists no GPU")
    x = shell.run(["nvidia-smi", "-q", "-x"], timeout=30)
    driver, cuda = parse_xml(x.stdout) if x.ok else (None, None)
    links = shell.run(["nvidia-smi", "topo", "-m"], timeout=30)
    p2p = shell.run(["nvidia-smi", "topo", "-p2p", "r"], timeout=30) if len(gpus) > 1 else None
    return Inventory(host=shell.name, gpus=gpus, driver_version=driver or q_driver, cuda_version=cuda,
                     links=parse_matrix(links.stdout) if links.ok else {},
                     p2p=parse_matrix(p2p.stdout) if p2p is not None and p2p.ok else {})


def host_ram_gib(shell: Shell) -> float | None:
    r = shell.run(["cat", "/proc/meminfo"], timeout=10)
    for line in r.stdout.splitlines() if r.ok else []:
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024 / 2**30
    return None
