"""Running jobs: launch a resolved job on an executor, keep its record, follow its log."""
