"""Fetching MOSHI's files from the Hugging Face Hub, once, ahead of time (``xswarm models pull``).

The voice bridge never downloads: a service that fetches 16 GB on its first start (or fails
to, behind a firewall) is a service that does not start. This is the one place that talks
to the Hub; it writes into the state directory, where start-up looks.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xswarm.config import Config
from xswarm.engine import moshi_loader
from xswarm.errors import XswarmError

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


@dataclass(frozen=True)
class PulledModel:
    """Where a model landed: ``files`` maps each ``[voice.moshi]`` key to the file it names."""

    repo: str
    dest: Path
    files: dict[str, Path]


def pull(
    config: Config, repo: str | None, dest: Path | None, say: Callable[[str], None]
) -> PulledModel:
    """Download ``repo`` (default: ``[voice.moshi] hf_repo``) into ``dest`` (default: the
    state directory's model folder); ``say`` hears each file as it starts."""
    repo = repo or config.moshi.hf_repo
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

    say(f"pulling {repo} into {dest}")
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
    files = {}
    for key, filename in wanted.items():
        say(f"  {filename}")
        path = _download(repo, filename, dest, required=True)
        assert path is not None
        files[key] = path
    if names.get("mimi_config_name"):
        _download(repo, str(names["mimi_config_name"]), dest, required=True)
    if config_file is not None:
        files["config"] = config_file
    return PulledModel(repo, dest, files)
