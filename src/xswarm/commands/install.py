"""``xswarm install``: user, directories, a release, config and units, idempotently."""

from __future__ import annotations

import os
from pathlib import Path

import click

from xswarm.commands.options import root_option, service_user_option
from xswarm.config import backend_addresses
from xswarm.ops import gpus, releases
from xswarm.ops.files import UntrustedPathError
from xswarm.ops.install import DEFAULT_KEEP, install, next_steps
from xswarm.ops.layout import SERVICE_USER, Layout
from xswarm.tls import PemPair, TlsError, check_pair

AUTO = "auto"


class InstanceCount(click.ParamType):
    """``--instances``: a count from 0 to 1000, or ``auto`` (one per GPU)."""

    name = "N|auto"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> object:
        if isinstance(value, int) or value == AUTO:
            return value
        text = str(value)
        if text.isdigit() and 0 <= int(text) <= 1000:
            return int(text)
        self.fail(f"{text!r} is neither a count from 0 to 1000 nor auto (one per GPU)", param, ctx)


@click.command(name="install")
@click.option(
    "--wheelhouse",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="directory of wheels: the xswarm wheel and its dependencies (offline install)",
)
@click.option(
    "--wheel",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="the xswarm wheel to install (default: the newest in --wheelhouse)",
)
@click.option("--version", "version", default=None, help="the release to pick from --wheelhouse")
@click.option(
    "--instances",
    type=InstanceCount(),
    default="0",
    show_default=True,
    help="template instances xswarm-voice@1..N behind HAProxy; auto (with --gpu): one per "
    "visible NVIDIA GPU, each pinned to its own device",
)
@click.option("--gpu", is_flag=True, help="add the NVIDIA drop-in (gpu.conf) to the voice units")
@click.option(
    "--profile",
    type=click.Choice(["latency", "throughput"]),
    multiple=True,
    help="the seed's performance tuning as a drop-in",
)
@click.option(
    "--haproxy/--no-haproxy",
    default=True,
    show_default=True,
    help="with --instances or --backends: write /etc/haproxy/haproxy.cfg",
)
@click.option(
    "--backends",
    default=None,
    metavar="HOST:PORT,...",
    help="bridges on other hosts that HAProxy balances calls over too (replaces [haproxy] "
    "backends; kept in a new config.toml); [haproxy] backend_ca_file makes it TLS",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="with --instances and HAProxy: serve wss:// on --tls-port with this PEM certificate "
    "chain (with its key in the same file, or --tls-key); /control and /metrics are not routed",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="the PEM private key of --tls-cert",
)
@click.option(
    "--tls-port",
    type=click.IntRange(1, 65535),
    default=443,
    show_default=True,
    help="HAProxy's TLS port, with --tls-cert",
)
@click.option("--python", default=None, help="interpreter for the release venv (default: system)")
@click.option(
    "--keep",
    type=click.IntRange(1, 100),
    default=DEFAULT_KEEP,
    show_default=True,
    help="releases to keep",
)
@root_option(help="install under this root instead of / (tests, images)")
@service_user_option()
def command(
    wheelhouse: Path | None,
    wheel: Path | None,
    version: str | None,
    instances: int | str,
    gpu: bool,
    profile: tuple[str, ...],
    haproxy: bool,
    backends: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_port: int,
    python: str | None,
    keep: int,
    root: Path,
    service_user: str,
) -> None:
    """Install xswarm on this server: user, directories, a release, config, units."""
    layout = Layout(root.resolve(), service_user)
    manage_system = layout.is_live
    if manage_system and service_user != SERVICE_USER:
        raise click.ClickException(
            f"--service-user is for staging trees (--root DIR); on this server the units run "
            f"as {SERVICE_USER}"
        )
    if manage_system and os.geteuid() != 0:
        raise click.ClickException(
            "install needs root: sudo xswarm install ... (or --root DIR for a staging tree)"
        )
    if wheel is None:
        if wheelhouse is None:
            raise click.ClickException("give --wheelhouse DIR (offline) or --wheel FILE")
        wheel = releases.find_wheel(wheelhouse, version)
    remote = _backends(backends, haproxy)
    chosen = _gpus(layout, instances, gpu)
    count = len(chosen) if instances == AUTO else int(instances)
    tls = _tls_pair(tls_cert, tls_key, bool(count or remote), haproxy)
    numbers = list(range(1, count + 1))
    profiles = (["gpu"] if gpu else []) + list(profile)
    try:
        report, installed = install(
            layout,
            wheel,
            wheelhouse,
            python or releases.default_python(),
            numbers,
            profiles,
            haproxy,
            manage_system,
            keep,
            tls,
            tls_port,
            remote,
            chosen,
        )
    except UntrustedPathError as exc:
        raise click.ClickException(str(exc)) from None
    for line in report.changed:
        click.echo(f"  + {line}")
    for line in report.unchanged:
        click.echo(f"  = {line}")
    for line in report.warnings:
        click.echo(f"  ! WARNING: {line}")
    if not report.changed:
        click.echo(f"xswarm {installed} is installed; nothing to change.")
    else:
        click.echo(f"xswarm {installed} installed.")
    click.echo(next_steps(numbers, haproxy, bool(remote)))


def _backends(text: str | None, haproxy: bool) -> tuple[str, ...] | None:
    """``--backends``, each entry checked (host, port, listed once) before anything is
    installed; None when the flag is absent (config.toml's list stands)."""
    if text is None:
        return None
    if not haproxy:
        raise click.ClickException(
            "--backends is HAProxy's list of servers; drop --no-haproxy (or drop --backends)"
        )
    entries = tuple(entry.strip() for entry in text.split(","))
    if entries == ("",):
        raise click.ClickException(
            "--backends: expected host:port,... such as 10.0.0.2:9998,10.0.0.3:9998, got nothing"
        )
    try:
        backend_addresses(entries)
    except ValueError as exc:
        raise click.ClickException(f"--backends: {exc}") from None
    return entries


def _gpus(layout: Layout, instances: int | str, gpu: bool) -> list[gpus.Gpu]:
    """With ``--instances auto``: the GPUs, one instance each (discovered before anything is
    installed, so a host without them changes nothing)."""
    if instances != AUTO:
        return []
    if not gpu:
        raise click.ClickException(
            "--instances auto means one instance per GPU and needs --gpu (the NVIDIA drop-in); "
            "give --instances auto --gpu, or a count: --instances N"
        )
    smi = gpus.run_smi if layout.is_live else None
    try:
        return gpus.discover(layout.root, os.environ, smi)
    except gpus.GpuDiscoveryError as exc:
        raise click.ClickException(str(exc)) from None


def _tls_pair(cert: Path | None, key: Path | None, fronted: bool, haproxy: bool) -> PemPair | None:
    """The pair HAProxy will serve, checked before anything is installed."""
    if cert is None:
        if key is not None:
            raise click.ClickException("--tls-key needs --tls-cert (the certificate chain)")
        return None
    if not fronted or not haproxy:
        raise click.ClickException(
            "--tls-cert is for HAProxy in front of --instances N or --backends; a single "
            "bridge serves TLS itself: set [voice.bridge] tls_cert and tls_key in config.toml"
        )
    pair = PemPair(cert.resolve(), key.resolve() if key is not None else None)
    try:
        check_pair(pair)
    except TlsError as exc:
        raise click.ClickException(f"--tls-cert: {exc}") from None
    return pair
