"""Run a rendered plan inside the container: each step in order, in the trainer's folder.

Prints a marker line before and after each step (runner's progress display reads them) and exits
with the first failing step's code. SIGTERM/SIGINT go to the running step's process group, so `runner stop` is clean.
A step's own `env` is set for that step over the container's environment.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading

MARK = "[runner]"


def main(plan_file: str) -> int:
    with open(plan_file) as f:
        plan = json.load(f)
    steps = plan["steps"]
    child = None

    def forward(signum, _frame):
        # to the step's whole process group: launchers (accelerate) do not pass signals on to the trainer
        if child and child.poll() is None:
            os.killpg(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i, step in enumerate(steps, 1):
        head = f"{MARK} step {i}/{len(steps)} {step['name']}"
        step_env = step.get("env") or {}
        shown = [f"{k}={v}" for k, v in step_env.items()] + step["argv"]
        print(f"{head} start: {shlex.join(shown)}", flush=True)
        child = subprocess.Popen(step["argv"], cwd=plan["workdir"], env={**os.environ, **step_env}, start_new_session=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        relays = [threading.Thread(target=relay, args=(pipe.fileno(), out)) for pipe, out in ((child.stdout, sys.stdout), (child.stderr, sys.stderr))]
        for r in relays:
            r.start()
        for r in relays:
            r.join()
        code = child.wait()
        print(f"{head} exit {code}", flush=True)
        if code != 0:
            return code if code > 0 else 128 - code
    print(f"{MARK} done", flush=True)
    return 0


def relay(fd: int, stream) -> None:
    """Copy one of the step's output streams to ours with each carriage return made a newline: tqdm redraws its bar
    with a bare CR, and the engine's log holds a line back until its newline (up to 16 KiB), so a progress bar
    would show up minutes late, all at once."""
    out, pending_cr = stream.buffer, False
    while chunk := os.read(fd, 65536):
        if pending_cr and not chunk.startswith(b"\n"):
            out.write(b"\n")
        pending_cr = chunk.endswith(b"\r")
        out.write(chunk.rstrip(b"\r").replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        out.flush()
    if pending_cr:
        out.write(b"\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/job/plan.json"))
