"""doctor's rules as plain functions: facts in, findings (each with its fix) out."""

from __future__ import annotations

from xswarm.ops import checks
from xswarm.ops.checks import DatabaseFacts, Facts, FileFacts, Holder, TokenFacts, UnitFacts

GOOD_ENV = FileFacts("/opt/xswarm/.env", True, "root", 0o600, "root")


def healthy(**changes: object) -> Facts:
    facts = Facts(
        env_file=GOOD_ENV,
        executables={"/opt/xswarm/releases/1/venv/bin/xswarm-voice": True},
        config_source="/opt/xswarm/config.toml",
        ports={"xswarm-voice.service": 9998, "xswarm-dashboard.service": 9999},
        socket_listen={"xswarm-voice.socket": "127.0.0.1:9998"},
        expected_listen={"xswarm-voice.socket": "127.0.0.1:9998"},
        listeners={9998: Holder(1, "systemd"), 9999: Holder(1, "systemd")},
        ours={1, 4242},
        engine="echo",
        database=DatabaseFacts("/var/lib/xswarm/xswarm.db", True, "ok"),
        units={
            "xswarm-voice.service": UnitFacts(
                "xswarm-voice.service", "loaded", "active", "running", 4242, 0, 2 << 30, 16 << 30
            )
        },
        mem_total=64 << 30,
        current_release="1",
    )
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def failures(facts: Facts) -> list[checks.Finding]:
    return [f for f in checks.diagnose(facts) if f.level == checks.FAIL]


def only_failure(facts: Facts) -> checks.Finding:
    found = failures(facts)
    assert len(found) == 1, found
    return found[0]


def test_a_healthy_server_has_no_failures() -> None:
    findings = checks.diagnose(healthy())
    assert not checks.failed(findings), findings
    assert {f.topic for f in findings} >= {".env", "config", "ports", "database", "units"}


def test_env_missing_wrong_owner_wrong_mode() -> None:
    missing = only_failure(healthy(env_file=FileFacts("/opt/xswarm/.env", False)))
    assert "missing" in missing.message and "xswarm install" in missing.fix
    # Root reads .env (systemd, for EnvironmentFile=): the service account must not own it.
    owner = only_failure(healthy(env_file=FileFacts("/opt/xswarm/.env", True, "xswarm", 0o600)))
    assert owner.message == "/opt/xswarm/.env is owned by xswarm, not root"
    assert owner.fix == "sudo chown root:root /opt/xswarm/.env"
    mode = only_failure(healthy(env_file=FileFacts("/opt/xswarm/.env", True, "root", 0o644)))
    assert "mode 644" in mode.message and mode.fix == "sudo chmod 600 /opt/xswarm/.env"
    link = only_failure(
        healthy(env_file=FileFacts("/opt/xswarm/.env", True, "xswarm", 0o777, kind="symlink"))
    )
    assert "is a symbolic link where a file should be" in link.message
    assert link.fix.startswith("sudo rm /opt/xswarm/.env")


def test_paths_root_relies_on_are_roots_and_not_writable_by_others() -> None:
    good = [
        FileFacts("/opt/xswarm", True, "root", 0o755, "root", "dir", "application"),
        FileFacts("/opt/xswarm/config.toml", True, "root", 0o640, "xswarm", "file", "config"),
        FileFacts("/var/lib/xswarm", True, "xswarm", 0o750, "xswarm", "dir", "state"),
    ]
    assert not failures(healthy(paths=good))
    writable = [*good[:1], FileFacts(good[1].path, True, "root", 0o660, "xswarm", "file", "config")]
    finding = only_failure(healthy(paths=writable))
    assert finding.message == (
        "/opt/xswarm/config.toml has mode 660: someone besides root can change it"
    )
    assert finding.fix == "sudo chmod 640 /opt/xswarm/config.toml"
    owned = [FileFacts("/opt/xswarm", True, "xswarm", 0o755, "xswarm", "dir", "application")]
    finding = only_failure(healthy(paths=owned))
    assert finding.message == "/opt/xswarm is owned by xswarm, not root"
    assert finding.fix == "sudo chown root:root /opt/xswarm"
    unreadable = [FileFacts(good[1].path, True, "root", 0o640, "root", "file", "config")]
    finding = only_failure(healthy(paths=unreadable))
    assert "group root, not xswarm" in finding.message
    assert finding.fix == "sudo chown root:xswarm /opt/xswarm/config.toml"
    state = [FileFacts("/var/lib/xswarm", True, "root", 0o755, "root", "dir", "state")]
    assert only_failure(healthy(paths=state)).fix == "sudo chown xswarm:xswarm /var/lib/xswarm"


def test_tokens_missing_weak_unreadable_or_shared() -> None:
    strong = [
        TokenFacts("XSWARM_SUPERVISOR_TOKEN", 43, "/opt/xswarm/.env"),
        TokenFacts("XSWARM_CONTROL_TOKEN", 43, "/opt/xswarm/.env"),
    ]
    assert not failures(healthy(tokens=strong))
    missing = only_failure(healthy(tokens=[strong[0], TokenFacts("XSWARM_CONTROL_TOKEN", None)]))
    assert missing.message == "XSWARM_CONTROL_TOKEN is not set in /opt/xswarm/.env"
    assert "add a line XSWARM_CONTROL_TOKEN=" in missing.fix and "token_urlsafe" in missing.fix
    weak = only_failure(healthy(tokens=[strong[0], TokenFacts("XSWARM_CONTROL_TOKEN", 8, "x")]))
    assert "is weak: 8 characters" in weak.message
    unreadable = TokenFacts("XSWARM_CONTROL_TOKEN", None, "/run/t", "No such file")
    assert "cannot be read from /run/t" in only_failure(healthy(tokens=[unreadable])).message
    shared = only_failure(healthy(tokens=strong, tokens_shared=True))
    assert "the same" in shared.message


def test_missing_executable() -> None:
    finding = only_failure(healthy(executables={"/opt/x/bin/xswarm-voice": False}))
    assert "/opt/x/bin/xswarm-voice" in finding.message and "rollback" in finding.fix


def test_config_error_is_reported_with_its_line() -> None:
    line = "/opt/xswarm/config.toml: [voice.bridge] port: expected a whole number, got str 'x'"
    finding = only_failure(healthy(config_error=line))
    assert finding.message == line


def test_port_in_use_names_the_process() -> None:
    facts = healthy(listeners={9998: Holder(777, "nginx"), 9999: Holder(1, "systemd")})
    finding = only_failure(facts)
    assert (
        finding.message == "port 9998, needed by xswarm-voice.service, is in use by PID 777 (nginx)"
    )
    assert "ss -ltnp" in finding.fix


def test_port_collision_between_an_instance_and_the_supervisor() -> None:
    facts = healthy(ports={"xswarm-voice@1.service": 9999, "xswarm-dashboard.service": 9999})
    finding = only_failure(facts)
    assert "port 9999 is claimed by xswarm-voice@1.service and xswarm-dashboard.service" in (
        finding.message
    )


def test_socket_disagreeing_with_config() -> None:
    facts = healthy(expected_listen={"xswarm-voice.socket": "127.0.0.1:9000"})
    assert "listens on 127.0.0.1:9998 but config.toml says 127.0.0.1:9000" in (
        only_failure(facts).message
    )


def test_models_and_gpu_fail_for_moshi_and_warn_for_auto() -> None:
    moshi = healthy(engine="moshi", device="cuda", models_error="no weights", gpu_present=False)
    assert {f.topic for f in failures(moshi)} == {"models", "gpu"}
    auto = healthy(engine="auto", device="cuda", models_error="no weights", gpu_present=False)
    assert not failures(auto)
    assert {f.topic for f in checks.diagnose(auto) if f.level == checks.WARN} == {"models", "gpu"}


def test_random_weights_fail_doctor_whatever_else_is_right() -> None:
    facts = healthy(engine="moshi", device="cuda", gpu_present=True, random_weights=True)
    finding = only_failure(facts)
    assert finding.topic == "engine"
    assert "UNTRAINED random weights" in finding.message
    assert "remove random_weights" in finding.fix
    assert not failures(healthy(engine="moshi", device="cuda", gpu_present=True))


def test_database_corrupt_or_unreadable() -> None:
    corrupt = healthy(database=DatabaseFacts("/db", True, "file is not a database"))
    assert "corrupt" in only_failure(corrupt).message
    unreadable = healthy(database=DatabaseFacts("/db", True, error="unable to open"))
    assert "cannot be opened" in only_failure(unreadable).message
    absent = healthy(database=DatabaseFacts("/db", False))
    assert not failures(absent)


def unit(**changes: object) -> dict[str, UnitFacts]:
    base = {
        "name": "xswarm-voice.service",
        "load_state": "loaded",
        "active_state": "active",
        "sub_state": "running",
        "main_pid": 4242,
    }
    base.update(changes)
    return {"xswarm-voice.service": UnitFacts(**base)}  # type: ignore[arg-type]


def test_restart_loop_and_config_exit() -> None:
    loop = only_failure(
        healthy(
            units=unit(
                n_restarts=4,
                active_state="activating",
                sub_state="auto-restart",
                exec_main_status=1,
            )
        )
    )
    assert "restarted 4 times" in loop.message and "Restart=no" in loop.fix
    refused = only_failure(healthy(units=unit(active_state="failed", exec_main_status=78)))
    assert "exit 78" in refused.message


def test_memory_headroom() -> None:
    near = healthy(units=unit(memory_current=int(15.5 * (1 << 30)), memory_max=16 << 30))
    assert "97%" in only_failure(near).message
    above_ram = checks.diagnose(healthy(units=unit(memory_max=16 << 30), mem_total=8 << 30))
    assert [f for f in above_ram if f.topic == "memory" and f.level == checks.WARN]


def test_units_out_of_date_and_no_release() -> None:
    stale = only_failure(healthy(stale_units=["xswarm-voice.service"], units_release="0"))
    assert "xswarm-voice.service" in stale.message and "from 0" in stale.message
    assert "no release" in only_failure(healthy(current_release=None)).message


def test_listening_inodes_reads_proc_net_tcp() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:270E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 12345 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:270E 0100007F:D3A2 01 00000000:00000000 00:00000000 00000000     0 "
        "       0 12399 1 0000000000000000 20 4 30 10 -1\n"
        "   2: garbage\n"
    )
    assert checks.listening_inodes(text) == {9998: 12345}


def test_haproxy_must_route_to_where_the_instances_listen() -> None:
    targets = {"voice1": "127.0.0.1:10001", "voice2": "127.0.0.1:10002"}
    agree = healthy(haproxy_servers=dict(targets), instance_targets=targets)
    assert not failures(agree)
    moved = healthy(
        haproxy_servers={"voice1": "127.0.0.1:10001", "voice2": "127.0.0.1:12002"},
        instance_targets=targets,
    )
    assert (
        "HAProxy sends voice2's calls to 127.0.0.1:12002, but that instance listens on "
        "127.0.0.1:10002" == only_failure(moved).message
    )
    missing = healthy(haproxy_servers={"voice1": "127.0.0.1:10001"}, instance_targets=targets)
    assert "to nowhere" in only_failure(missing).message
    extra = healthy(
        haproxy_servers={**targets, "voice3": "127.0.0.1:10003"}, instance_targets=targets
    )
    assert not failures(extra)
    assert [f for f in checks.diagnose(extra) if f.topic == "haproxy" and f.level == checks.WARN]


def test_haproxy_server_lines_are_read() -> None:
    text = "backend b\n    server voice1 127.0.0.1:10001 check\n    server-template x 3 a:1\n"
    assert checks.haproxy_servers(text) == {"voice1": "127.0.0.1:10001"}


DEBIAN_RELOAD = ["/usr/sbin/haproxy -Ws -f $CONFIG -c -q $EXTRAOPTS", "/bin/kill -USR2 $MAINPID"]
SAVE = "-/opt/xswarm/current/venv/bin/xswarm haproxy save-state --haproxy-config ${CONFIG}"


def state_findings(facts: Facts) -> list[checks.Finding]:
    return [f for f in checks.diagnose(facts) if "reload" in f.message]


def test_a_reload_that_would_undrain_servers_is_reported() -> None:
    dropin = ["", DEBIAN_RELOAD[0], SAVE, DEBIAN_RELOAD[1]]
    kept = healthy(haproxy_state_reload=dropin, haproxy_debian_reload=DEBIAN_RELOAD)
    [ok] = state_findings(kept)
    assert ok.level == checks.OK and "keeps drained servers drained" in ok.message
    # No haproxy.cfg loading states (no HAProxy here): nothing to say.
    assert not state_findings(healthy())
    # haproxy.cfg loads the file but nothing saves it before a reload.
    [missing] = state_findings(healthy(haproxy_state_reload=[]))
    assert missing.level == checks.WARN
    assert "puts every drained server back in service" in missing.message
    assert "xswarm-server-state.conf" in missing.fix and "daemon-reload" in missing.fix
    # Debian changed its ExecReload= lines: the drop-in's copy no longer matches them.
    changed = ["/usr/sbin/haproxy -c -f $CONFIG", "/bin/kill -USR2 $MAINPID"]
    [stale] = state_findings(healthy(haproxy_state_reload=dropin, haproxy_debian_reload=changed))
    assert stale.level == checks.WARN and "runs the drop-in's copy" in stale.message


def test_the_saved_states_must_be_roots_alone() -> None:
    path = "/var/lib/haproxy/xswarm-server-state"
    planted = FileFacts(path, True, "xswarm", 0o644, "xswarm", role="haproxy state")
    assert only_failure(healthy(paths=[planted])).fix == f"sudo chown root:root {path}"
    writable = FileFacts(path, True, "root", 0o666, "root", role="haproxy state")
    assert "someone besides root can change what HAProxy loads" in (
        only_failure(healthy(paths=[writable])).message
    )
    folder = FileFacts("/var/lib/haproxy", True, "root", 0o777, "root", "dir", "haproxy state dir")
    assert only_failure(healthy(paths=[folder])).fix == "sudo chmod 755 /var/lib/haproxy"
