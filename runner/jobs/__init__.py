"""Running jobs: launch a resolved job on an executor, keep its record, follow its log."""

from runner._moved import forward

__getattr__ = forward("runner.jobs.records")  # runner/cli.py's `jobs.load`, …; goes at merge
