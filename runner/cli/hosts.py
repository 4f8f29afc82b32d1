"""The remote-hosts inventory: hosts add, list, rm."""

from __future__ import annotations

from pathlib import Path

import typer

from runner import cli, views
from runner.cli import JsonOpt, app


# options `runner hosts add` and `runner clusters add` share
KeyOpt = typer.Option(None, "--key", help="private key file (default: ssh config, agent, ~/.ssh/id_*)")
KnownHostsOpt = typer.Option(None, "--known-hosts", help="known_hosts file (default: the alias's UserKnownHostsFile or ~/.ssh/known_hosts)")


def ssh_files(key: Path | None, known_hosts: Path | None) -> dict[str, str | None]:
    """--key and --known-hosts as the inventory stores them: absolute paths."""
    return {"key": str(key.expanduser().resolve()) if key else None, "known_hosts": str(known_hosts.expanduser().resolve()) if known_hosts else None}


hosts_app = typer.Typer(help="Remote GPU hosts: `runner train JOB --host NAME` runs jobs there over SSH.", no_args_is_help=True)
app.add_typer(hosts_app, name="hosts")


@hosts_app.command("add")
def hosts_add(
    name: str = typer.Argument(..., help="a short name, e.g. gpu01"),
    ssh: str = typer.Option(..., "--ssh", help="user@address[:port], or a Host alias of ~/.ssh/config"),
    key: Path = KeyOpt,
    known_hosts: Path = KnownHostsOpt,
    models: str = typer.Option("~/runner/models", help="models folder on the host (read-only in containers)"),
    data: str = typer.Option("~/runner/data", help="datasets are synced to DATA/<job>/<i>-<folder> on the host"),
    cache: str = typer.Option("~/runner/cache", help="caches on the host"),
    outputs: str = typer.Option("~/runner/outputs", help="outputs on the host; `runner pull` brings them back"),
    replace: bool = typer.Option(False, "--replace", help="replace a host of the same name (without it, adding one is refused)"),
) -> None:
    """Add a host to the inventory (--replace: replace one of the same name). Nothing is contacted: `runner train --host`
    checks the host."""
    from runner.remote import hosts

    h = hosts.add(hosts.make(name, ssh=ssh, **ssh_files(key, known_hosts), models=models, data=data, cache=cache, outputs=outputs), replace=replace)
    views.line(cli.out, f"added {h.name} ({h.ssh}) to {hosts.inventory_file()}")


@hosts_app.command("list")
def hosts_list(as_json: bool = JsonOpt('{"hosts": [{"name", "ssh", "key", "known_hosts", "models", "data", "cache", "outputs"}]}')) -> None:
    """List the hosts of the inventory with their SSH targets and folders."""
    from runner.remote import hosts

    inventory = list(hosts.load_all().values())
    views.emit_json({"hosts": [{"name": h.name, **h.model_dump(exclude={"name"})} for h in inventory]}) if as_json else cli.out.print(views.hosts_table(inventory))


@hosts_app.command("rm")
def hosts_rm(name: str = typer.Argument(..., help="a host name from `runner hosts list`")) -> None:
    """Remove a host from the inventory (nothing on the host is touched)."""
    from runner.remote import hosts

    hosts.remove(name)
    views.line(cli.out, f"removed {name}")
