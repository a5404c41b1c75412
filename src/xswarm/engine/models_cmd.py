"""``xswarm models``: fetch MOSHI's files once, ahead of time, and check what start-up will find.

The voice bridge never downloads: a service that fetches 16 GB on its first start (or fails
to, behind a firewall) is a service that does not start. ``pull`` is the one place that talks
to the Hugging Face Hub; it writes into the state directory, where start-up looks, and prints
the ``[voice.moshi]`` lines that pin those exact files.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import click

from xswarm import config as xconfig
from xswarm.engine import moshi_loader
from xswarm.errors import EX_CONFIG, XswarmError

_OFF = {"1", "on", "yes", "true"}
REACH_TIMEOUT_S = 10


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _OFF


def _check_reachable() -> None:
    """Fail in seconds, not after minutes of retries, when the Hub cannot be reached at all."""
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    request = urllib.request.Request(endpoint, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=REACH_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # it answered: reachable, whatever it thinks of a bare HEAD
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise XswarmError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({reason}); check the network, "
            "a proxy (HTTPS_PROXY) or HF_ENDPOINT, or copy the files by hand"
        ) from None


def _download(repo: str, filename: str, dest: Path, required: bool) -> Path | None:
    """One file of ``repo`` into ``dest``; None when an optional file does not exist there."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo, filename, local_dir=str(dest)))
    except GatedRepoError:
        raise XswarmError(
            f"{repo} is gated: accept its terms on huggingface.co and set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise XswarmError(
            f"repository {repo} does not exist on the Hugging Face Hub "
            "(or is private: set HF_TOKEN)"
        ) from None
    except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: test it first
        raise XswarmError(
            f"cannot reach the Hugging Face Hub to fetch {filename} of {repo}; check the network "
            f"(or HF_ENDPOINT), or copy the files into {dest}"
        ) from None
    except EntryNotFoundError:
        if not required:
            return None
        raise XswarmError(f"{repo} has no file {filename}; is it a MOSHI repository?") from None
    except (HfHubHTTPError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise XswarmError(f"downloading {filename} of {repo} failed: {reason[:200]}") from None


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
    config = xconfig.load(config_path)
    repo = repo or config.get("voice.moshi", "hf_repo")
    if not repo or repo.count("/") != 1:
        raise XswarmError(f"--repo must look like owner/name, got {repo!r}")
    dest = dest or moshi_loader.pulled_dir(config, repo)
    if _offline():
        raise XswarmError(
            f"HF_HUB_OFFLINE is set, so nothing may be downloaded; unset it for this command "
            f"or copy the files of {repo} into {dest}"
        )
    missing = moshi_loader.missing_modules()
    if missing:
        raise XswarmError(missing)
    _check_reachable()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise XswarmError(f"cannot create {dest}: {exc.strerror}; pass --dest") from None

    click.echo(f"pulling {repo} into {dest}", err=True)
    config_file = _download(repo, moshi_loader.CONFIG_NAME, dest, required=False)
    names: dict[str, object] = {}
    if config_file is not None:
        try:
            loaded = json.loads(config_file.read_text())
        except (OSError, ValueError):
            loaded = None
        if not isinstance(loaded, dict):
            raise XswarmError(f"{repo}'s config.json is not a JSON object of model settings")
        names = loaded
    wanted = {
        "moshi_weights": str(names.get("moshi_name", moshi_loader.DEFAULT_MOSHI_NAME)),
        "mimi_weights": str(names.get("mimi_name", moshi_loader.DEFAULT_MIMI_NAME)),
        "tokenizer": str(names.get("tokenizer_name", moshi_loader.DEFAULT_TOKENIZER_NAME)),
    }
    lines = {}
    for key, filename in wanted.items():
        click.echo(f"  {filename}", err=True)
        path = _download(repo, filename, dest, required=True)
        assert path is not None
        lines[key] = path
    if names.get("mimi_config_name"):
        _download(repo, str(names["mimi_config_name"]), dest, required=True)
    if config_file is not None:
        lines["config"] = config_file
    click.echo("# paste into [voice.moshi] of config.toml (or leave the paths empty:")
    click.echo(f"# start-up also looks in {dest})")
    click.echo("[voice.moshi]")
    click.echo(f"hf_repo = {json.dumps(repo)}")
    for key, path in lines.items():
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

    config = xconfig.load(config_path)
    reason = probe(config)
    if reason is not None:
        raise _NotReady(reason)
    from xswarm.engine.moshi import MoshiEngine

    slots = MoshiEngine(config).capacity
    try:
        ready = moshi_loader.preflight(config, slots)
    except XswarmError as exc:
        raise _NotReady(str(exc)) from None
    files, plan = ready.files, ready.plan
    described = files.config_path if files.config_path is not None else "Kyutai's 7B defaults"
    gib = 1 << 30
    click.echo(f"MOSHI can start on {ready.device} with {slots} slots:")
    click.echo(f"  weights   {files.moshi_weights}")
    click.echo(f"  mimi      {files.mimi_weights}")
    click.echo(f"  tokenizer {files.tokenizer}")
    click.echo(f"  config    {described}")
    click.echo(
        f"  memory    {plan.need(slots) / gib:.1f} GiB needed of {ready.free_bytes / gib:.1f} GiB "
        f"free ({plan.per_slot_bytes / gib:.3f} GiB per slot; "
        f"{plan.slots_that_fit(ready.free_bytes)} slots would fit)"
    )


class _NotReady(XswarmError):
    exit_status = EX_CONFIG
