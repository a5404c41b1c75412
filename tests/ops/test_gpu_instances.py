"""One instance per GPU: discovery from the driver's /proc tree (under ``--root``), and
``xswarm install --instances auto --gpu`` writing each instance's device, port and socket.

The /proc files follow the driver's own layout, one folder per GPU named by its PCI bus id
(``/proc/driver/nvidia/gpus/0000:62:00.0/information``), with the driver's field names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from xswarm import config as config_module
from xswarm.commands import install
from xswarm.ops import gpus, units
from xswarm.ops.layout import Layout

STAGING = ["--service-user", "nobody"]

# (bus id, model, uuid, device minor): minors deliberately not in bus order, as on real hosts.
CARDS = [
    ("0000:c1:00.0", "NVIDIA H200", "GPU-cccc0000-0000-0000-0000-000000000003", 0),
    ("0000:1a:00.0", "NVIDIA H200", "GPU-aaaa0000-0000-0000-0000-000000000001", 2),
    ("0000:62:00.0", "NVIDIA H200", "GPU-bbbb0000-0000-0000-0000-000000000002", 1),
]


def information(model: str, uuid: str, bus: str, minor: int, excluded: str = "No") -> str:
    return (
        f"Model: \t\t {model}\n"
        "IRQ:             10\n"
        f"GPU UUID: \t {uuid}\n"
        "Video BIOS: \t 96.00.99.00.01\n"
        "Bus Type: \t PCIe\n"
        "DMA Size: \t 52 bits\n"
        "DMA Mask: \t 0xfffffffffffff\n"
        f"Bus Location: \t {bus}\n"
        f"Device Minor: \t {minor}\n"
        "GPU Firmware: \t 550.54.15\n"
        f"GPU Excluded:\t {excluded}\n"
    )


def fake_proc(root: Path, cards: list[tuple[str, str, str, int]] = CARDS) -> Path:
    for bus, model, uuid, minor in cards:
        folder = root / "proc/driver/nvidia/gpus" / bus
        folder.mkdir(parents=True)
        (folder / "information").write_text(information(model, uuid, bus, minor))
    return root


def test_proc_gpus_are_numbered_by_bus_id_like_nvidia_smi(tmp_path: Path) -> None:
    found = gpus.from_proc(fake_proc(tmp_path))
    assert [(g.index, g.bus_id, g.minor) for g in found] == [
        (0, "0000:1a:00.0", 2),
        (1, "0000:62:00.0", 1),
        (2, "0000:c1:00.0", 0),
    ]
    assert found[1].device == "cuda:1" and found[1].uuid.startswith("GPU-bbbb")
    assert found[0].describe() == "cuda:0 NVIDIA H200 at 0000:1a:00.0"
    assert gpus.from_proc(tmp_path / "elsewhere") == []


def test_an_excluded_gpu_takes_no_cuda_index(tmp_path: Path) -> None:
    fake_proc(tmp_path, CARDS[1:2])
    folder = tmp_path / "proc/driver/nvidia/gpus/0000:05:00.0"
    folder.mkdir()
    (folder / "information").write_text(
        information("NVIDIA H200", "GPU-dead", "0000:05:00.0", 3, excluded="Yes")
    )
    assert [(g.index, g.bus_id) for g in gpus.from_proc(tmp_path)] == [(0, "0000:1a:00.0")]


def test_nvidia_smi_lines_are_read_when_proc_lists_nothing(tmp_path: Path) -> None:
    out = "GPU 0: NVIDIA H200 (UUID: GPU-aaaa)\nGPU 1: NVIDIA H200 NVL (UUID: GPU-bbbb)\n"
    found = gpus.discover(tmp_path, {}, lambda: out)
    assert [(g.index, g.model, g.uuid) for g in found] == [
        (0, "NVIDIA H200", "GPU-aaaa"),
        (1, "NVIDIA H200 NVL", "GPU-bbbb"),
    ]


def test_cuda_visible_devices_narrows_the_choice_by_index_or_uuid(tmp_path: Path) -> None:
    found = gpus.from_proc(fake_proc(tmp_path))
    assert gpus.visible(found, {}) == found
    chosen = gpus.visible(found, {"CUDA_VISIBLE_DEVICES": "GPU-cccc,0"})
    assert [g.device for g in chosen] == ["cuda:2", "cuda:0"]
    assert gpus.visible(found, {"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == [found[1]]
    with pytest.raises(gpus.GpuDiscoveryError) as caught:
        gpus.visible(found, {"CUDA_VISIBLE_DEVICES": "7"})
    assert str(caught.value).startswith("CUDA_VISIBLE_DEVICES='7': '7' matches no GPU on this host")
    assert "name each GPU by its index or a unique UUID prefix, or unset it" in str(caught.value)
    with pytest.raises(gpus.GpuDiscoveryError, match="'GPU-' matches 3 GPUs"):
        gpus.visible(found, {"CUDA_VISIBLE_DEVICES": "GPU-"})


def test_no_gpu_is_an_error_naming_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(gpus.GpuDiscoveryError) as caught:
        gpus.discover(tmp_path, {}, lambda: None)
    assert str(caught.value) == (
        f"--instances auto --gpu found no NVIDIA GPU: {tmp_path}/proc/driver/nvidia/gpus lists "
        "no GPU and nvidia-smi -L is absent; install and load the NVIDIA driver (nvidia-smi -L "
        "must list the GPUs), or give --instances N"
    )
    with pytest.raises(gpus.GpuDiscoveryError, match="hides all 3; unset it"):
        gpus.discover(fake_proc(tmp_path), {"CUDA_VISIBLE_DEVICES": ""}, None)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--instances", "auto"], "--instances auto means one instance per GPU and needs --gpu"),
        (["--instances", "auto", "--gpu"], "found no NVIDIA GPU"),
        (["--instances", "many"], "'many' is neither a count from 0 to 1000 nor auto"),
    ],
)
def test_install_refuses_auto_without_gpus_before_touching_anything(
    tmp_path: Path, argv: list[str], expected: str
) -> None:
    wheel = tmp_path / "xswarm-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    root = tmp_path / "root"
    root.mkdir()
    result = CliRunner().invoke(
        install.command, ["--root", str(root), "--wheel", str(wheel), *argv, *STAGING]
    )
    assert result.exit_code != 0
    assert expected in result.output
    assert list(root.iterdir()) == []


def test_the_gpu_drop_in_binds_every_node_up_to_the_highest_device(tmp_path: Path) -> None:
    config = config_module.from_mapping(
        {
            "voice.bridge.instances.1": {"device": "cuda:0"},
            "voice.bridge.instances.2": {"device": "cuda:2"},
        }
    )
    assert units.highest_gpu(config, [1, 2]) == 2
    assert units.highest_gpu(config_module.defaults(), [1, 2]) == 0
    plan = units.render(Layout(tmp_path), "0.1.0", config, [1, 2], ["gpu"], {})
    service = units.parse(plan.files["xswarm-voice@.service.d/gpu.conf"])["Service"]
    assert service["Environment"] == ["CUDA_DEVICE_ORDER=PCI_BUS_ID"]
    binds = service["BindPaths"][0].split()
    assert binds[:3] == ["-/dev/nvidia0", "-/dev/nvidia1", "-/dev/nvidia2"]
    assert "-/dev/nvidiactl" in binds and "-/dev/nvidia3" not in binds
    allowed = service["DeviceAllow"]
    assert {"/dev/nvidia0 rw", "/dev/nvidia1 rw", "/dev/nvidia2 rw"} <= set(allowed)


@pytest.fixture(scope="module")
def gpu_root(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, str]:
    root = fake_proc(tmp_path_factory.mktemp("gpuroot"))
    result = CliRunner().invoke(
        install.command,
        ["--root", str(root), "--wheelhouse", str(wheelhouse), "--instances", "auto", "--gpu"]
        + STAGING,
        env={"CUDA_VISIBLE_DEVICES": None},
    )
    assert result.exit_code == 0, result.output
    return Layout(root, "nobody"), result.output


def test_auto_install_pins_one_instance_per_gpu(gpu_root: tuple[Layout, str]) -> None:
    layout, output = gpu_root
    config = config_module.load(layout.config)
    pinned = {n: config.for_instance(n) for n in (1, 2, 3)}
    assert {n: c.moshi.device for n, c in pinned.items()} == {
        1: "cuda:0",
        2: "cuda:1",
        3: "cuda:2",
    }
    assert {n: c.bridge.port for n, c in pinned.items()} == {1: 10001, 2: 10002, 3: 10003}
    assert config.dashboard.instances == tuple(
        f"ws://127.0.0.1:{port}/control" for port in (10001, 10002, 10003)
    )
    text = layout.config.read_text()
    assert "# Written by `xswarm install --instances auto --gpu`: cuda:1 NVIDIA H200 at " in text
    for number in (1, 2, 3):
        socket = layout.unit_dir / f"xswarm-voice@{number}.socket.d" / "listen.conf"
        assert f"ListenStream=127.0.0.1:1000{number}" in socket.read_text()
    dropin = (layout.unit_dir / "xswarm-voice@.service.d" / "gpu.conf").read_text()
    assert "DeviceAllow=/dev/nvidia2 rw" in dropin
    assert "= xswarm-voice@2 runs on cuda:1 NVIDIA H200 at 0000:62:00.0" in output
    assert "xswarm-voice@3.socket xswarm-voice@3" in output


def test_auto_install_keeps_an_operators_config_and_says_what_it_kept(
    gpu_root: tuple[Layout, str], wheelhouse: Path
) -> None:
    layout, _ = gpu_root
    edited = layout.config.read_text().replace('device = "cuda:1"', 'device = "cpu"')
    layout.config.write_text(edited)
    result = CliRunner().invoke(
        install.command,
        ["--root", str(layout.root), "--wheelhouse", str(wheelhouse)]
        + ["--instances", "auto", "--gpu", *STAGING],
        env={"CUDA_VISIBLE_DEVICES": None},
    )
    assert result.exit_code == 0, result.output
    assert layout.config.read_text() == edited
    assert (
        f"= {layout.config} keeps xswarm-voice@2 on device 'cpu', not on cuda:1 NVIDIA H200 at "
        '0000:62:00.0; to pin it, add [voice.bridge.instances.2] device = "cuda:1"'
    ) in result.output
    assert "= xswarm-voice@1 runs on cuda:0 NVIDIA H200 at 0000:1a:00.0" in result.output
