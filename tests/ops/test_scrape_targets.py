"""The Prometheus target files a host writes for itself (``xswarm targets``).

tests/ops/test_prometheus.py feeds what this writes to a real Prometheus and checks that it
scrapes both services through them; these tests pin what goes into the files.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.certs import make_ca
from xswarm.commands import targets
from xswarm.config import from_mapping
from xswarm.ops.scrape_targets import TargetError, host_targets


def groups(text: str) -> list[dict[str, object]]:
    loaded = json.loads(text)
    assert isinstance(loaded, list)
    return loaded


def test_a_wildcard_bind_is_scraped_at_the_advertised_name() -> None:
    config = from_mapping({"voice": {"bridge": {"host": "0.0.0.0"}}, "dashboard": {"host": "::"}})
    found = host_targets(config, [], "gpu-1.example.net", "gpu-1")
    assert found.voice_name == "voice-gpu-1.json"
    assert found.dashboard_name == "dashboard-gpu-1.json"
    assert groups(found.voice) == [
        {"targets": ["gpu-1.example.net:9998"], "labels": {"host": "gpu-1", "gpu": "cuda"}}
    ]
    assert groups(found.dashboard) == [
        {"targets": ["gpu-1.example.net:9999"], "labels": {"host": "gpu-1"}}
    ]


def test_a_specific_address_is_kept_and_ipv6_is_bracketed() -> None:
    config = from_mapping(
        {"voice": {"bridge": {"host": "10.1.2.3", "engine": "echo"}}, "dashboard": {"host": "::"}}
    )
    found = host_targets(config, [], "fd00::7", "front")
    assert groups(found.voice) == [{"targets": ["10.1.2.3:9998"], "labels": {"host": "front"}}]
    assert groups(found.dashboard)[0]["targets"] == ["[fd00::7]:9999"]


def test_one_target_per_instance_at_the_port_the_instance_computes() -> None:
    config = from_mapping(
        {
            "voice": {
                "bridge": {
                    "host": "0.0.0.0",
                    "instance_port_base": 10000,
                    "instances": {"2": {"port": 10102}},
                }
            }
        }
    )
    found = groups(host_targets(config, [1, 2], "h", "h").voice)
    assert [group["targets"] for group in found] == [["h:10001"], ["h:10102"]]


def test_a_bridge_serving_tls_is_scraped_over_https(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    leaf = ca.leaf("server", 1)
    config = from_mapping(
        {"voice": {"bridge": {"tls_cert": str(leaf.cert), "tls_key": str(leaf.key)}}}
    )
    (group,) = groups(host_targets(config, [], "h", "h").voice)
    assert group["labels"] == {"host": "h", "gpu": "cuda", "__scheme__": "https"}


@pytest.mark.parametrize("label", ["", "a/b", "-x", "x y", "../etc", "a" * 300])
def test_a_host_label_that_cannot_name_a_file_is_refused(label: str) -> None:
    with pytest.raises(TargetError, match="--host-label"):
        host_targets(from_mapping({}), [], "h", label)


@pytest.mark.parametrize("name", ["", "http://h", "h h", "[::1]", "user@h"])
def test_an_advertised_name_that_is_not_a_host_is_refused(name: str) -> None:
    with pytest.raises(TargetError, match="--advertise"):
        host_targets(from_mapping({}), [], name, "h")


def test_the_command_writes_both_files_readable_by_prometheus(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[voice.bridge]\nengine = "echo"\nhost = "0.0.0.0"\n')
    out = tmp_path / "prometheus" / "xswarm"
    result = CliRunner().invoke(
        targets.command,
        [
            "--root",
            str(tmp_path / "root"),
            "--config",
            str(config),
            "--advertise",
            "voice-a.example.net",
            "--host-label",
            "voice-a",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    voice = out / "voice-voice-a.json"
    assert groups(voice.read_text())[0]["targets"] == ["voice-a.example.net:9998"]
    assert stat.S_IMODE(voice.stat().st_mode) == 0o644
    assert (out / "dashboard-voice-a.json").is_file()


def test_the_command_prints_when_no_directory_is_given(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        targets.command,
        ["--root", str(tmp_path), "--advertise", "h", "--host-label", "bad/label"],
    )
    assert result.exit_code == 1
    assert "--host-label" in result.output
    result = CliRunner().invoke(
        targets.command, ["--root", str(tmp_path), "--advertise", "h", "--host-label", "h"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# voice-h.json\n[")
