"""musubi-tuner on several machines: the launcher each machine of a Slurm job runs, written into the job folder.

accelerate launch needs, on every machine, the machine count, the machine's rank and the main process's address and
port (accelerate 1.6.0 utils/launch.py prepare_multi_gpu_env → torchrun's static rendezvous). The count is rendered
(accelerate.yaml's num_machines, num_processes of all machines); rank and address exist only once Slurm has placed
the job, so the launcher reads them in the job: the rank from SLURM_NODEID (one task per node: node i is machine i),
the address from the first host of SLURM_JOB_NODELIST (node 0 is the first host of the list, where rank 0 listens).
The port is derived from SLURM_JOB_ID, so every machine computes the same one without talking first, and two jobs
whose first node is the same get different ports; rank 0 checks that it is free. Nothing secret is on its command line.
"""

from __future__ import annotations

MULTINODE_PY = "multinode_launch.py"
# ports for the rendezvous: above runner's local master ports (29500-29599), below Linux's ephemeral range (32768-)
PORT_BASE, PORT_SPAN = 29600, 3000

MULTINODE_LAUNCH = f'''"""Written by runner: one machine's share of a multi-node musubi-tuner run, started once per node by Slurm.

usage: multinode_launch.py MACHINES accelerate launch [OPTIONS] SCRIPT [ARGS]
Adds --machine_rank (SLURM_NODEID), --main_process_ip (the first host of SLURM_JOB_NODELIST) and --main_process_port
({PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN}) after `accelerate launch`, then runs it in this process's place.
"""
import os
import re
import socket
import sys

PORT_BASE, PORT_SPAN = {PORT_BASE}, {PORT_SPAN}


def fail(problem):
    print(f"multinode_launch.py: {{problem}}", file=sys.stderr, flush=True)
    sys.exit(2)


def first_host(nodelist):
    """The first host of a Slurm host list, compressed or not: 'gpu[07-09,12],login1' -> 'gpu07' (zero-padding kept)."""
    depth, end = 0, len(nodelist)
    for i, c in enumerate(nodelist):
        depth += {{"[": 1, "]": -1}}.get(c, 0)
        if c == "," and depth == 0:
            end = i
            break
    host = re.sub(r"\\[([^\\]]*)\\]", lambda m: re.split(r"[,-]", m.group(1))[0], nodelist[:end].strip())
    if not host or any(c in host for c in "[],") or re.search(r"\\s", host):
        fail(f"SLURM_JOB_NODELIST={{nodelist!r}} is not a Slurm host list")
    return host


def env_int(name):
    value = os.environ.get(name, "")
    if not value.isdigit():
        fail(f"{{name}}={{value!r}}: it should be set by Slurm to a number; run this as one task per node of a Slurm job "
             "(srun --ntasks-per-node=1), which runner's Slurm executor does")
    return int(value)


def main():
    machines, argv = int(sys.argv[1]), sys.argv[2:]
    if argv[:2] != ["accelerate", "launch"]:
        fail("expects `accelerate launch ...` after the machine count")
    rank, nodes = env_int("SLURM_NODEID"), env_int("SLURM_JOB_NUM_NODES")
    if nodes != machines:
        fail(f"the job was rendered for {{machines}} machines, but Slurm gave it {{nodes}} nodes (SLURM_JOB_NUM_NODES)")
    if rank >= machines:
        fail(f"SLURM_NODEID={{rank}} is not below the {{machines}} machines of the job")
    host = first_host(os.environ.get("SLURM_JOB_NODELIST") or fail("SLURM_JOB_NODELIST is not set"))
    port = PORT_BASE + env_int("SLURM_JOB_ID") % PORT_SPAN
    if rank == 0:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's TCPStore binds: a restart's TIME_WAIT is no clash
            try:
                s.bind(("", port))
            except OSError as e:
                fail(f"port {{port}} (from SLURM_JOB_ID) is taken on {{host}} ({{e.strerror}}); another job's rendezvous or a service holds it; resubmit (a new job id gives another port)")
    print(f"runner: machine {{rank}} of {{machines}}, main process {{host}}:{{port}}", flush=True)
    argv[2:2] = ["--machine_rank", str(rank), "--main_process_ip", host, "--main_process_port", str(port)]
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
'''
