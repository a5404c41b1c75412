"""Small pure helpers: systemctl output, Prometheus samples, versions, status rendering."""

from __future__ import annotations

from xswarm.ops import health, releases, status, systemctl


def test_parse_show_splits_units() -> None:
    text = "Id=a.service\nNRestarts=2\nStatusText=x=y\n\nId=b.service\nNRestarts=0\n"
    blocks = systemctl.parse_show(text)
    assert blocks == [
        {"Id": "a.service", "NRestarts": "2", "StatusText": "x=y"},
        {"Id": "b.service", "NRestarts": "0"},
    ]


def test_number_treats_infinity_and_unset_as_none() -> None:
    assert systemctl.number("17179869184") == 17179869184
    assert systemctl.number("infinity") is None
    assert systemctl.number("18446744073709551615") is None
    assert systemctl.number("[not set]") is None
    assert systemctl.number(None) is None


def test_metric_reads_unlabelled_samples() -> None:
    text = "# HELP xswarm_active_calls x\nxswarm_active_calls 3\nxswarm_active_calls_total 9\n"
    assert health.metric(text, "xswarm_active_calls") == 3
    assert health.metric(text, "missing") is None
    assert health.metric("xswarm_active_calls nan-ish", "xswarm_active_calls") is None


def test_url_reaches_wildcard_binds_on_loopback() -> None:
    assert health.url("0.0.0.0", 9998, "/readyz") == "http://127.0.0.1:9998/readyz"
    assert health.url("::", 9998, "/readyz") == "http://[::1]:9998/readyz"


def test_probe_of_a_closed_port_says_why() -> None:
    probe = health.get("http://127.0.0.1:1/healthz", timeout=1)
    assert probe.status == 0 and probe.error and not probe.ok


def test_versions_sort_numerically() -> None:
    names = ["0.1.10", "0.1.9", "0.2.0rc1", "0.1.9.post1"]
    assert sorted(names, key=releases.version_key) == ["0.1.9", "0.1.9.post1", "0.1.10", "0.2.0rc1"]


def test_status_render_is_one_table() -> None:
    rows = [
        status.Row(
            "xswarm-voice.service",
            9998,
            "active/running",
            42,
            1,
            2 << 30,
            16 << 30,
            "Voice bridge running (1 active calls)",
            True,
            "ready",
            "1/300",
        ),
        status.Row("xswarm-dashboard.service", 9999, "inactive/dead", healthy=False),
    ]
    text = status.render("0.1.0", rows)
    assert text.splitlines()[0] == "xswarm release: 0.1.0"
    assert "2.0G / 16.0G (12%)" in text
    assert "xswarm-voice.service: Voice bridge running (1 active calls)" in text
    assert "DOWN" in text
    unaccounted = status.render(None, [status.Row("u", 1, memory_max=1 << 30)])
    assert "- / 1.0G" in unaccounted and "none installed" in unaccounted


def test_status_shows_the_device_each_instance_runs_on_and_its_card() -> None:
    rows = [
        status.Row(
            "xswarm-voice@1.service",
            10001,
            calls="0/80",
            device="cuda:0",
            gpu="NVIDIA H200 at 0000:1a:00.0",
        ),
        status.Row(
            "xswarm-voice@2.service",
            10002,
            calls="3/80",
            device="cuda:1",
            gpu="NVIDIA H200 at 0000:62:00.0",
        ),
        status.Row("xswarm-dashboard.service", 9999),
    ]
    lines = status.render("0.1.0", rows).splitlines()
    assert lines[2].split()[-1] == "DEVICE"
    assert lines[4].split()[-2:] == ["3/80", "cuda:1"] and lines[5].split()[-1] == "-"
    assert lines[-3:] == [
        "GPUs:",
        "  xswarm-voice@1.service: cuda:0 NVIDIA H200 at 0000:1a:00.0",
        "  xswarm-voice@2.service: cuda:1 NVIDIA H200 at 0000:62:00.0",
    ]
