"""The ``isoboxd`` entry point: the Docker Engine API over the same engine
and state as the ``isobox`` CLI (both can be used at once)."""

from __future__ import annotations

import logging
import sys

import click

from isobox import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="isoboxd")
@click.option("-H", "--host", "hosts", multiple=True,
              help="Where to listen: unix:///path (default unix:///run/isobox/isobox.sock), "
                   "tcp://HOST:PORT (TLS with client certificates), fd:// (systemd)")
@click.option("--root", envvar="ISOBOX_ROOT", default=None,
              help="State directory (default /var/lib/isobox; also ISOBOX_ROOT)")
@click.option("--insecure-registry", "insecure", multiple=True,
              help="Registry to reach over plain HTTP or unverified TLS")
@click.option("--tlsverify", is_flag=True, help="Require client certificates signed by "
              "--tlscacert (needed for tcp://)")
@click.option("--tlscacert", default=None, help="CA that signs client certificates")
@click.option("--tlscert", default=None, help="The server's certificate")
@click.option("--tlskey", default=None, help="The server's key")
@click.option("--insecure-tcp", is_flag=True,
              help="Allow tcp:// without TLS (anyone reaching the port is root here)")
@click.option("--group", default="isobox", show_default=True,
              help="Group owning the unix socket, when it exists")
@click.option("-D", "--debug", is_flag=True, help="Debug logging")
def cli(hosts: tuple[str, ...], root: str | None, insecure: tuple[str, ...], tlsverify: bool,
        tlscacert: str | None, tlscert: str | None, tlskey: str | None, insecure_tcp: bool,
        group: str, debug: bool) -> None:
    """Serve the Docker Engine API: DOCKER_HOST=unix:///run/isobox/isobox.sock docker ..."""
    from isobox.daemon.server import TLSOptions, catch_early_signals, listeners, run
    from isobox.engine.config import load_config
    from isobox.errors import IsoboxError

    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="isoboxd: %(levelname)s %(message)s")
    tls = TLSOptions(verify=tlsverify, cacert=tlscacert, cert=tlscert, key=tlskey)
    catch_early_signals()
    try:
        config = load_config(root, insecure_registries=list(insecure))
        found = listeners(list(hosts), tls=tls, insecure_tcp=insecure_tcp, group=group)
    except (IsoboxError, OSError) as exc:
        click.echo(f"isoboxd: {exc}", err=True)
        sys.exit(1)
    from isobox.engine import zygote

    try:
        launcher = zygote.start(config)  # before any thread: it forks
    except IsoboxError as exc:
        logging.getLogger("isoboxd").warning("%s: containers start the slow way", exc)
        launcher = None
    try:
        run(config, found)
    finally:
        if launcher is not None:
            zygote.stop(config, launcher)


def main() -> None:
    cli.main(standalone_mode=True)
