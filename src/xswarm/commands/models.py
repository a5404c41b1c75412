"""``xswarm models``: fetch MOSHI's files ahead of time, and check what start-up will find."""

from __future__ import annotations

import json
from pathlib import Path

import click

from xswarm import config as xconfig
from xswarm.commands.options import to_stderr
from xswarm.engine import moshi_loader, moshi_pull
from xswarm.errors import EngineLoadError, XswarmError


@click.group(name="models")
def command() -> None:
    """Fetch and check the MOSHI model files (weights, Mimi codec, text tokenizer)."""


@command.command(name="pull")
@click.option("--repo", default=None, help="Hugging Face repo; default: [voice.moshi] hf_repo.")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to fill; default: <state dir>/models/<owner>--<name>.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="config.toml; default: $XSWARM_CONFIG, else /opt/xswarm/config.toml.",
)
def pull(repo: str | None, dest: Path | None, config_path: Path | None) -> None:
    """Download a MOSHI model into the state directory and print the config lines to paste."""
    pulled = moshi_pull.pull(xconfig.load(config_path), repo, dest, to_stderr)
    click.echo("# paste into [voice.moshi] of config.toml (or leave the paths empty:")
    click.echo(f"# start-up also looks in {pulled.dest})")
    click.echo("[voice.moshi]")
    click.echo(f"hf_repo = {json.dumps(pulled.repo)}")
    for key, path in pulled.files.items():
        click.echo(f"{key} = {json.dumps(str(path.resolve()))}")


@command.command(name="check")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="config.toml; default: $XSWARM_CONFIG, else /opt/xswarm/config.toml.",
)
def check(config_path: Path | None) -> None:
    """Say whether the MOSHI engine could start here, without loading it (exit 78 if not)."""
    from xswarm.engine.moshi import probe
    from xswarm.engine.select import choice

    config = xconfig.load(config_path)
    picked = choice(config)
    click.echo(f"a start would run {picked.engine or 'nothing (exit 78)'}: {picked.reason}")
    reason = probe(config)
    if reason is not None:
        raise EngineLoadError(reason)
    try:
        ready = moshi_loader.preflight(config, config.moshi.slots or 1)
    except XswarmError as exc:
        raise EngineLoadError(str(exc)) from None
    files, plan = ready.files, ready.plan
    fit = plan.slots_that_fit(ready.free_bytes)
    slots = config.moshi.slots or min(fit, config.bridge.max_concurrent_calls)
    described = files.config_path if files.config_path is not None else "Kyutai's 7B defaults"
    gib = 1 << 30
    sized = "" if config.moshi.slots else " at most (warm-up keeps those within the step budget)"
    click.echo(f"MOSHI can start on {ready.device} with {slots} slots{sized}:")
    untrained = "RANDOM, untrained (random_weights = true: speed measurement only)"
    click.echo(f"  weights   {files.moshi_weights or untrained}")
    click.echo(f"  mimi      {files.mimi_weights or untrained}")
    click.echo(f"  tokenizer {files.tokenizer or 'made-up word ids (no tokenizer file)'}")
    click.echo(f"  config    {described}")
    click.echo(
        f"  memory    {plan.need(slots) / gib:.1f} GiB needed of {ready.free_bytes / gib:.1f} GiB "
        f"free ({plan.per_slot_bytes / gib:.3f} GiB per slot; "
        f"{plan.slots_that_fit(ready.free_bytes)} slots would fit)"
    )
