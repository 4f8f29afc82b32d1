"""Where a job runs: the local Docker engine (SDK) or a remote host (SSH)."""


def executor_for(host: str):
    """The executor of a host name as job records store it: "local", or a hosts inventory entry."""
    if host == "local":
        from runner.executors.local import LocalDocker

        return LocalDocker()
    from runner.executors.remote import RemoteDocker  # the remote-hosts feature

    return RemoteDocker.for_host(host)
