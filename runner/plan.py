"""A rendered job: the files a trainer reads and the exact commands, ready for any executor.

Executors run a Plan as it is (argv lists, env, mounts); nothing downstream re-derives trainer flags.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from runner.config import URL_CREDENTIALS
from runner.mounts import Mount

# a word of a variable's name that says it holds a credential (HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY, …)
SECRET_WORDS = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS", "KEY", "APIKEY", "AUTH"}


def is_secret(name: str, value: str) -> bool:
    """Whether a variable's value must stay out of argv, files and logs: a credential by its name, or a URL with one."""
    return bool(SECRET_WORDS & set(name.upper().split("_")) or URL_CREDENTIALS.search(value))


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    # set for this step only, over the container's environment (images/run_plan.py)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    job: str
    trainer: str
    workdir: str  # the trainer's checkout inside the image
    files: dict[str, str]  # file name (under /job) → content
    steps: list[Step]
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    output_dir: str = ""  # container path the trainer writes to
    # set by launch for the job it starts (`runner render` leaves them empty): how its container is started
    # (runner.executors.container.ContainerSpec.record), the job's resolved settings and the target's facts behind them
    container: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["files"] = sorted(self.files)  # contents live beside plan.json
        return json.dumps(d, indent=2) + "\n"
