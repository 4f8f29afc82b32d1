"""runner: one job file, two Wan2.1 LoRA trainers, pinned images, local or remote GPUs."""

__version__ = "0.1.0"
