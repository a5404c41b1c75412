"""The monitoring config (deploy/prometheus, deploy/grafana) checked by promtool and held to
what the services really export.

promtool comes with Debian's ``prometheus`` package (deploy/ci/system-deps.sh installs it as
root). Without it the promtool checks skip and say so, unless XSWARM_REQUIRE_SYSTEMD=1 (CI's
"everything must run"), where that is a failure. The drift tests scrape a real
``xswarm-voice`` (echo engine) and a real ``xswarm-dashboard`` supervising it, after one call,
and fail when a rule or a dashboard panel names a metric, a label or a label value that they
do not export.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.supervisor.support import running_supervisor, twilio_call
from tests.support.bridge import free_port, running_bridge
from tests.support.certs import https_get, make_ca, tls_bridge
from tests.support.waiting import eventually, eventually_sync
from xswarm.config import from_mapping
from xswarm.ops.scrape_targets import host_targets

CHECKOUT = Path(__file__).resolve().parents[2]
PROMETHEUS = CHECKOUT / "deploy/prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "rules/xswarm.rules.yml"
DASHBOARD = CHECKOUT / "deploy/grafana/xswarm.json"
JOBS = {"voice": "xswarm-voice", "supervisor": "xswarm-dashboard"}
# Labels a series gets from its target rather than from the service: Prometheus' own, the one
# prometheus.yml's relabel_configs add, and those a target file written by install sets.
TARGET_LABELS = {"job", "instance", "role", "host", "gpu"}
TOKEN = "prometheus-test-token"
BRIDGE_CONFIG = '[voice.bridge]\nengine = "echo"\nstatus_interval = 0.2\n'


def promtool_or_skip() -> str:
    path = shutil.which("promtool")
    if path is not None:
        return path
    reason = (
        "promtool not found: install Debian's prometheus package "
        "(`sudo bash deploy/ci/system-deps.sh` does)"
    )
    if os.environ.get("XSWARM_REQUIRE_SYSTEMD") == "1":
        pytest.fail(f"XSWARM_REQUIRE_SYSTEMD=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def promtool() -> str:
    return promtool_or_skip()


def run_promtool(promtool: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# -- PromQL, read just enough to name what an expression uses ------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r'(?<![\w:])([a-zA-Z_:][\w:]*)\s*\{((?:[^}"]|"(?:[^"\\]|\\.)*")*)\}')
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Every series name an expression selects (functions, keywords and labels left out)."""
    bare = _GROUPING.sub(" ", re.sub(r"\{[^}]*\}", " ", _STRING.sub('""', expr)))
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    return {name for name in _IDENTIFIER.findall(bare) if name.lower() not in _KEYWORDS}


def matchers(expr: str) -> Iterator[tuple[str, str, str, str]]:
    """(metric, label, operator, value) for every label matcher after a metric name."""
    for metric, body in _SELECTOR.findall(expr):
        for label, op, value in _MATCHER.findall(body):
            yield metric, label, op, value


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip()
        for group in _GROUPING.findall(_STRING.sub('""', expr))
        for label in group.split(",")
        if label.strip()
    }


def test_metric_names_reads_promql() -> None:
    expr = (
        'sum by (job, le) (rate(a_bucket{x="b{c}"}[5m])) / on(job) group_left() '
        "(job:b:sum > bool 0.5) or absent(up) unless c_total offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "job:b:sum", "up", "c_total"}
    assert list(matchers(expr)) == [("a_bucket", "x", "=", "b{c}")]
    assert grouping_labels(expr) == {"job", "le"}


# -- the files ----------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every query in the dashboard, variables replaced by a match-all."""
    found = []
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = re.sub(r"\$\{?\w+\}?", ".*", target["expr"])
            found.append((f"panel {panel['id']} {panel['title']!r} {target['refId']}", expr))
    return found


def test_promtool_checks_the_scrape_config(promtool: str) -> None:
    output = run_promtool(promtool, "check", "config", str(CONFIG))
    assert f"SUCCESS: {len(rules())} rules found" in output, output


def test_promtool_checks_the_rules(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", str(RULES))


def test_promtool_unit_tests_every_alert_firing_and_not(promtool: str) -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests, "no rule unit tests under deploy/prometheus/tests/"
    output = run_promtool(promtool, "test", "rules", *map(str, tests))
    assert "SUCCESS" in output
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    tested: dict[str, set[bool]] = {name: set() for name in alerts}
    for path in tests:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                tested[check["alertname"]].add(bool(check.get("exp_alerts")))
    missing = {name: sorted(seen) for name, seen in tested.items() if seen != {True, False}}
    assert not missing, f"alerts not tested both firing (True) and silent (False): {missing}"


def test_the_scrape_jobs_and_target_files_fit_what_install_writes() -> None:
    config = load_yaml(CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(JOBS.values())
    assert fnmatch.fnmatch("rules/xswarm.rules.yml", config["rule_files"][0])
    for role, job_name in JOBS.items():
        job = jobs[job_name]
        (sd,) = job["file_sd_configs"]
        (pattern,) = sd["files"]
        assert pattern.startswith("/etc/prometheus/xswarm/"), pattern
        (role_label,) = job["relabel_configs"]
        assert role_label == {"target_label": "role", "replacement": role}
        stem = pattern.rsplit("/", 1)[1].split("-")[0]
        example = PROMETHEUS / f"targets/{stem}.example.json"
        assert fnmatch.fnmatch(f"/etc/prometheus/xswarm/{stem}-gpu-host-1.json", pattern)
        assert not fnmatch.fnmatch(f"/etc/prometheus/xswarm/{example.name}", pattern)
        for group in json.loads(example.read_text()):
            assert set(group) == {"targets", "labels"}
            assert all(re.fullmatch(r"[\w.-]+:\d+", target) for target in group["targets"])
            assert set(group["labels"]) <= TARGET_LABELS
    renames = jobs[JOBS["supervisor"]]["metric_relabel_configs"]
    assert renames[0]["source_labels"] == ["exported_instance"]
    assert renames[0]["target_label"] == "voice_instance"


# -- the real services --------------------------------------------------------------------


@dataclass
class Scrape:
    """What one service exports: sample names, and the labels and values seen on each."""

    text: str
    labels: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, rename: dict[str, str] | None = None) -> Scrape:
        scrape = cls(text)
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, rest = line.partition("{")
            name = name.split(" ")[0]
            seen = scrape.labels.setdefault(name, {})
            body = rest.rpartition("}")[0] if rest else ""
            for label, _, value in _MATCHER.findall(body):
                seen.setdefault((rename or {}).get(label, label), set()).add(value)
        return scrape


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


@dataclass
class Services:
    """A real bridge and the supervisor watching it, each as ``host:port``."""

    voice: str
    supervisor: str
    tmp: Path


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Both services running, the supervisor connected, one real call placed and ended."""
    tmp = tmp_path_factory.mktemp("prometheus")
    env = {"XSWARM_SUPERVISOR_TOKEN": TOKEN, "XSWARM_CONTROL_TOKEN": "prometheus-bridge-token"}
    with (
        running_bridge(tmp, BRIDGE_CONFIG, env=env) as bridge,
        running_supervisor(tmp, [bridge.ws_url + "/control"], env=env) as supervisor,
    ):
        eventually_sync(
            lambda: get(supervisor.http_url + "/metrics"),
            lambda text: re.search(r"^xswarm_supervisor_instance_up\{.*\} 1$", text, re.M),
            within=30,
        )

        async def one_call() -> None:
            async with twilio_call(bridge.ws_url) as caller:
                # Hang up only once the call is real at both ends: its audio echoed back by
                # the bridge and the call live in the supervisor's fleet.
                await eventually(
                    lambda: asyncio.to_thread(get, bridge.http_url + "/metrics"),
                    lambda text: re.search(r"^xswarm_frames_out_total [1-9]", text, re.M),
                )
                await eventually(
                    lambda: asyncio.to_thread(get, supervisor.http_url + "/metrics"),
                    lambda text: re.search(r"^xswarm_supervisor_active_calls\{.*\} 1$", text, re.M),
                )
                await caller.hang_up()

        asyncio.run(one_call())
        eventually_sync(
            lambda: get(bridge.http_url + "/metrics"),
            lambda voice: 'outcome="none"' not in voice,
            within=30,
        )
        yield Services(f"127.0.0.1:{bridge.port}", f"127.0.0.1:{supervisor.port}", tmp)


@pytest.fixture(scope="module")
def tls_voice_scrape(services: Services) -> str:
    """What a bridge serving TLS itself adds: its certificate's expiry."""
    ca = make_ca(services.tmp / "pki")
    with tls_bridge(services.tmp / "tls-bridge", ca.leaf("server", 1), ca) as bridge:
        return https_get(bridge.port, "/metrics", ca)


@pytest.fixture(scope="module")
def scrapes(services: Services, tls_voice_scrape: str) -> dict[str, Scrape]:
    voice = Scrape.parse(get(f"http://{services.voice}/metrics"))
    for name, labels in Scrape.parse(tls_voice_scrape).labels.items():
        voice.labels.setdefault(name, labels)
    return {
        JOBS["voice"]: voice,
        # prometheus.yml's metric_relabel_configs: the supervisor's instance label arrives as
        # exported_instance and is kept as voice_instance (test_a_real_prometheus... shows it).
        JOBS["supervisor"]: Scrape.parse(
            get(f"http://{services.supervisor}/metrics"), {"instance": "voice_instance"}
        ),
    }


def exported_sources(name: str, scrapes: dict[str, Scrape]) -> set[str]:
    """The exported series a name stands for: itself, or those its recording rule reads."""
    if any(name in scrape.labels for scrape in scrapes.values()):
        return {name}
    records = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}
    if name not in records:
        return set()
    return set().union(*(exported_sources(n, scrapes) for n in metric_names(records[name])))


def assert_exported(where: str, expr: str, scrapes: dict[str, Scrape]) -> None:
    """Every name, matcher and grouping label in ``expr`` exists in a real scrape or a rule."""
    exported = {name: job for job, scrape in scrapes.items() for name in scrape.labels}
    recorded = recorded_names()
    all_labels = TARGET_LABELS | {
        label for scrape in scrapes.values() for seen in scrape.labels.values() for label in seen
    }
    for name in metric_names(expr):
        known = name == "up" or name in exported or name in recorded
        assert known, f"{where}: {name} is neither exported by a service nor recorded: {expr}"
    for metric, label, op, value in matchers(expr):
        if label == "job":
            jobs = set(JOBS.values()) if op == "=~" else {value}
            assert all(j in JOBS.values() for j in re.split(r"\|", value)), (where, value)
            if metric in exported:
                assert exported[metric] in jobs, f"{where}: {metric} comes from {exported[metric]}"
            continue
        if label in TARGET_LABELS:
            continue
        seen: dict[str, set[str]] = {}
        for source in exported_sources(metric, scrapes):
            for name, values in scrapes[exported[source]].labels[source].items():
                seen.setdefault(name, set()).update(values)
        if not seen and metric not in exported:
            continue
        assert label in seen, f"{where}: {metric} has no label {label} (it has {sorted(seen)})"
        if op == "=":
            assert value in seen[label], f"{where}: {metric}{{{label}}} is never {value!r}"
        elif op == "=~" and re.fullmatch(r"[\w|]+", value):
            for alternative in value.split("|"):
                assert alternative in seen[label], f"{where}: {metric}{{{label}}} never {value}"
    unknown = grouping_labels(expr) - all_labels - {"le"}
    assert not unknown, f"{where}: grouping by labels nothing carries: {unknown}"


def test_every_metric_the_rules_use_is_exported(scrapes: dict[str, Scrape]) -> None:
    for rule in rules():
        assert_exported(rule.get("record") or rule["alert"], rule["expr"], scrapes)


def test_promtool_lints_what_the_services_export(
    promtool: str, scrapes: dict[str, Scrape], tls_voice_scrape: str
) -> None:
    texts = {job: scrape.text for job, scrape in scrapes.items()}
    texts["xswarm-voice (tls_cert)"] = tls_voice_scrape
    for job, text in texts.items():
        output = run_promtool(promtool, "check", "metrics", stdin=text)
        assert output.strip() == "", f"{job}: promtool check metrics says:\n{output}"


# -- the Grafana dashboard ----------------------------------------------------------------


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"panel {panel['title']!r} queries nothing"
        for target in panel["targets"]:
            for name in re.findall(r"\$\{?(\w+)\}?", target["expr"]):
                assert name in variables, f"panel {panel['title']!r} uses undefined ${name}"
    assert len(dashboard_exprs()) >= 10


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    """promtool has no offline PromQL parser of its own: a rules file of the queries is one."""
    records = [
        {"record": f"grafana_query_{n}", "expr": expr}
        for n, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    run_promtool(promtool, "check", "rules", str(path))


def test_every_metric_the_dashboard_uses_exists(scrapes: dict[str, Scrape]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_exprs()
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*), *(\w+)\)", variable["definition"])
            assert inner, variable["definition"]
            queries.append((f"variable {variable['name']}", inner.group(1)))
    for where, expr in queries:
        assert_exported(where, expr, scrapes)


# -- a real Prometheus ----------------------------------------------------------------------


def test_a_real_prometheus_scrapes_both_and_evaluates_every_rule(services: Services) -> None:
    """prometheus.yml as shipped, its target files pointed at a temporary directory."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        promtool_or_skip()  # the same package: the same skip or failure
        pytest.skip("promtool found but not the prometheus server")
    config = load_yaml(CONFIG)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    for job in config["scrape_configs"]:
        (sd,) = job["file_sd_configs"]
        sd["files"] = [sd["files"][0].replace("/etc/prometheus/xswarm", str(services.tmp))]
        sd["refresh_interval"] = "1s"
    (services.tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    # The target files `xswarm targets` writes from the services' own config.
    voice_port = int(services.voice.rsplit(":", 1)[1])
    supervisor_port = int(services.supervisor.rsplit(":", 1)[1])
    config = from_mapping(
        {
            "voice": {"bridge": {"engine": "echo", "port": voice_port}},
            "dashboard": {"port": supervisor_port},
        }
    )
    written = host_targets(config, [], "127.0.0.1", "local")
    (services.tmp / written.voice_name).write_text(written.voice)
    (services.tmp / written.dashboard_name).write_text(written.dashboard)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log = services.tmp / "prometheus.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                prometheus,
                f"--config.file={services.tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={services.tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def query(expr: str) -> list[dict[str, Any]]:
        url = f"{api}/query?query={urllib.parse.quote(expr)}"
        return list(json.loads(get(url))["data"]["result"])

    def loaded_rules() -> list[dict[str, Any]]:
        groups = json.loads(get(f"{api}/rules"))["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    try:

        def scraped_and_evaluated() -> bool:
            assert server.poll() is None, log.read_text()
            with contextlib.suppress(OSError, ValueError):
                evaluated = all(r["health"] != "unknown" for r in loaded_rules())
                return (
                    evaluated and len(query("up == 1")) == 2 and bool(query("xswarm_engine_info"))
                )
            return False

        eventually_sync(
            scraped_and_evaluated, within=60, interval=0.5, detail=lambda: log.read_text()
        )
        roles = {(s["metric"]["job"], s["metric"]["role"]) for s in query("up")}
        assert roles == {("xswarm-voice", "voice"), ("xswarm-dashboard", "supervisor")}
        (seen,) = query("xswarm_supervisor_instance_up")
        assert seen["metric"]["voice_instance"] == services.voice
        assert seen["metric"]["instance"] == services.supervisor
        assert "exported_instance" not in seen["metric"]
        loaded = loaded_rules()
        assert len(loaded) == len(rules())
        unhealthy = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
        assert not unhealthy, unhealthy
        assert query('ALERTS{alertstate="firing"}') == []
    finally:
        server.terminate()
        server.wait(30)
