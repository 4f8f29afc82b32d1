"""runner: one job file, two Wan2.1 LoRA trainers, pinned images, local or remote GPUs."""

from runner import _moved  # noqa: F401  (old module paths for runner/cli.py; goes at merge, see runner/_moved.py)

__version__ = "0.1.0"
