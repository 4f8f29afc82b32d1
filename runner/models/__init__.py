"""Model files: the presets (what a task needs, in which format), downloading them, reading their headers, finding them."""

from runner._moved import forward

__getattr__ = forward("runner.models.presets")  # runner/cli.py's `from runner.models import Format`; goes at merge
