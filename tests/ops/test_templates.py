"""config.toml and .env templates: generated from the schema, checked in, never drifting."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from xswarm import config as config_module
from xswarm.config import SCHEMA
from xswarm.ops import templates, units

DEPLOY = units.deploy_dir()


def uncomment(text: str) -> str:
    return "\n".join(
        line[2:] if re.match(r"# (\[[a-z.0-9]+\]$|\w+ = )", line) else line
        for line in text.splitlines()
    )


def test_checked_in_examples_match_the_generator() -> None:
    assert (DEPLOY / "config.example.toml").read_text() == templates.config_example(), (
        "deploy/config.example.toml is stale: run python -m xswarm.ops.templates deploy"
    )
    assert (DEPLOY / "env.example").read_text() == templates.env_example()


def test_every_schema_key_is_listed_and_uncommenting_gives_the_defaults() -> None:
    text = templates.config_example()
    for section, keys in SCHEMA.items():
        assert f"# [{section}]" in text
        for key in keys:
            assert re.search(rf"^# {key} = ", text, re.M), f"[{section}] {key} missing"
    assert tomllib.loads(text) == {}
    live = config_module.from_mapping(tomllib.loads(uncomment(text)))
    defaults = config_module.defaults()
    for attribute in config_module.SECTIONS.values():
        assert getattr(live, attribute) == getattr(defaults, attribute)
    assert live.instances == {1: {"port": 10001}}


def test_env_template_lists_every_secret_commented() -> None:
    text = templates.env_example()
    for name, _ in templates.ENV_KEYS:
        assert f"\n# {name}=\n" in text
    assert not [line for line in text.splitlines() if line and not line.startswith("#")]


def test_write_examples(tmp_path: Path) -> None:
    templates.write_examples(tmp_path)
    assert (tmp_path / "config.example.toml").read_text() == templates.config_example()
