"""The job path: resolve a job against its target, check the resolved job, render the trainer plan."""
