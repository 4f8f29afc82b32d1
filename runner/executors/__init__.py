"""Where a job runs: the local Docker engine (SDK) or a remote host (SSH)."""
