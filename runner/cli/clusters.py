"""The clusters inventory: clusters add, list, remove (Slurm clusters, reached through their login node)."""

from __future__ import annotations

from pathlib import Path

import typer

from runner import cli, views
from runner.cli import JsonOpt, app
from runner.cli.hosts import KeyOpt, KnownHostsOpt, ssh_files


clusters_app = typer.Typer(help="Slurm clusters: `runner train JOB --cluster NAME` submits jobs there through the login node.",
                           no_args_is_help=True)
app.add_typer(clusters_app, name="clusters")


@clusters_app.command("add")
def clusters_add(
    name: str = typer.Argument(..., help="a short name, e.g. hpc"),
    slurm: bool = typer.Option(False, "--slurm", help="the cluster runs Slurm (the only scheduler runner knows so far)"),
    login: str = typer.Option(..., "--login", help="the login node: user@address[:port], or a Host alias of ~/.ssh/config"),
    key: Path = KeyOpt,
    known_hosts: Path = KnownHostsOpt,
    partition: str = typer.Option(None, "--partition", help="sbatch --partition (default: the cluster's default partition)"),
    account: str = typer.Option(None, "--account", help="sbatch --account (default: your default account)"),
    models: str = typer.Option("~/runner/models", help="models folder, on the filesystem the nodes share (read-only in containers)"),
    data: str = typer.Option("~/runner/data", help="shared folder the datasets are staged to"),
    cache: str = typer.Option("~/runner/cache", help="shared folder for caches, the image archive and each run's Slurm files"),
    outputs: str = typer.Option("~/runner/outputs", help="shared folder for outputs; `runner pull` brings them back"),
    runtime: str = typer.Option("docker", "--runtime", help="how the compute nodes run the image: docker, enroot or apptainer (checked on a node)"),
    replace: bool = typer.Option(False, "--replace", help="replace a cluster of the same name (without it, adding one is refused)"),
) -> None:
    """Add a Slurm cluster: checks over SSH that the login node has Slurm's commands and, with srun, that a compute
    node has the runtime; then stores it beside the hosts (clusters.yaml). Nothing is stored when a check fails."""
    from runner.errors import UserError
    from runner.executors.slurm import preflight
    from runner.remote import clusters, ssh

    c = clusters.make(name, ssh=login, **ssh_files(key, known_hosts), partition=partition, account=account, runtime=runtime, models=models, data=data, cache=cache, outputs=outputs)
    clusters.check_files(c)
    if not slurm:
        raise UserError("runner clusters add", "needs the cluster's scheduler: --slurm (the only one runner knows so far).", f"add --slurm: `runner clusters add {name} --slurm --login {login}`.")
    found = {}
    clusters.add(c, replace=replace, check=lambda c: found.update(preflight(c, ssh.RemoteShell(c.name, ssh.connect(c), c))))
    views.line(cli.out, f"added {c.name} (Slurm, login {c.ssh}, {c.runtime.value} on {found['node']}) to {clusters.inventory_file()}")


@clusters_app.command("list")
def clusters_list(as_json: bool = JsonOpt('{"clusters": [{"name", "scheduler", "ssh", "partition", "account", "runtime", "key", "known_hosts", '
                                          '"models", "data", "cache", "outputs"}]}')) -> None:
    """List the clusters with their login nodes, Slurm settings and shared folders."""
    from runner.remote import clusters

    inventory = list(clusters.load_all().values())
    if as_json:
        views.emit_json({"clusters": [{"name": c.name, **c.model_dump(mode="json", exclude={"name"})} for c in inventory]})
    else:
        cli.out.print(views.clusters_table(inventory))


@clusters_app.command("remove")
def clusters_remove(name: str = typer.Argument(..., help="a cluster name from `runner clusters list`")) -> None:
    """Remove a cluster from the inventory (nothing on the cluster is touched)."""
    from runner.remote import clusters

    clusters.remove(name)
    views.line(cli.out, f"removed {name}")
