from tests.fakeshell import FakeShell

from runner.gpu.inventory import gather, parse_matrix


def test_h200_recorded():
    inv = gather(FakeShell(card="h200"))
    assert inv.problem is None and inv.count == 1
    g = inv.gpus[0]
    assert (g.name, g.memory_mib, g.compute_capability, g.sm) == ("NVIDIA H200", 143771, "9.0", 90)
    assert (inv.driver_version, inv.cuda_version) == ("580.159.04", "13.0")
    assert inv.links == {} and inv.p2p == {}  # one GPU: no pairs


def test_h100_recorded():
    inv = gather(FakeShell(card="h100"))
    assert inv.gpus[0].name == "NVIDIA H100 80GB HBM3" and inv.gpus[0].memory_mib == 81559
    assert not inv.gpus[0].is_geforce_rtx_40 and not inv.gpus[0].is_blackwell


def test_two_rtx4090_links_and_p2p():
    inv = gather(FakeShell(card="rtx4090x2"))
    assert inv.count == 2 and all(g.is_geforce_rtx_40 and g.sm == 89 for g in inv.gpus)
    assert inv.links == {"0-1": "PHB"}
    assert inv.p2p_broken() == ["0-1"]


def test_rtx5090_is_blackwell():
    inv = gather(FakeShell(card="rtx5090"))
    assert inv.gpus[0].sm == 120 and inv.gpus[0].is_blackwell and inv.cuda_version == "12.8"


def test_sixteen_gb_card():
    g = gather(FakeShell(card="rtx4060ti16")).gpus[0]
    assert round(g.memory_gib, 1) == 16.0 and g.is_geforce_rtx_40


def test_no_nvidia_smi_is_a_result_not_a_crash():
    inv = gather(FakeShell(name="laptop"))
    assert inv.gpus == [] and inv.problem == "no NVIDIA GPU/driver visible on laptop: nvidia-smi is not installed"


def test_driver_not_loaded():
    from runner.shell import Result

    smi = ("nvidia-smi", "--query-gpu=index,name,memory.total,driver_version,compute_cap,pci.bus_id", "--format=csv")
    msg = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    inv = gather(FakeShell(name="box", answers={smi: Result(9, msg, "")}))
    assert inv.problem.startswith("no NVIDIA GPU/driver visible on box: nvidia-smi failed (NVIDIA-SMI has failed")


def test_topo_matrix_with_color_codes_and_nvlink():
    text = "\t\x1b[4mGPU0\tGPU1\tGPU2\tCPU Affinity\x1b[0m\nGPU0\t X \tNV18\tSYS\t0-7\nGPU1\tNV18\t X \tSYS\t0-7\nGPU2\tSYS\tSYS\t X \t8-15\n"
    assert parse_matrix(text) == {"0-1": "NV18", "0-2": "SYS", "1-2": "SYS"}


def test_blackwell_cards_get_musubis_cuda_12_8_pins():
    from runner.gpu import variant

    assert variant.choose("musubi", gather(FakeShell(card="rtx5090"))).pins_table == "blackwell"
    assert variant.choose("musubi", gather(FakeShell(card="h100"))).pins_table == "default"
    assert variant.choose("diffpipe", gather(FakeShell(card="rtx5090"))).pins_table == "default"
