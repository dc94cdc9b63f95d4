"""The compose files (deploy/compose) agree with the code: a worker per family, every process scraped, host
networking everywhere in the override. Read as YAML, no Docker needed (tests/integration/test_compose.py runs them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import yaml

from pipeline.settings import InputFamily

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE / name).read_text(encoding="utf-8"))
    return loaded


def _services(name: str) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _load(name)["services"]
    return services


def _workers() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _services("docker-compose.yml").items() if s.get("command", [""])[0] == "worker"}


def test_one_worker_per_family_each_in_its_own_group_after_the_topics() -> None:
    """Every input family has exactly one worker service, consuming that family only, in a consumer group of its
    own (docs/operations.md), started only once `topics apply` has succeeded."""
    workers = _workers()
    families = {s["command"][s["command"].index("--families") + 1]: name for name, s in workers.items()}
    assert sorted(families) == sorted(get_args(InputFamily)) and len(families) == len(workers)
    groups = [s["environment"]["MINNOW_KAFKA__GROUP_ID"] for s in workers.values()]
    assert len(set(groups)) == len(groups)
    for service in workers.values():
        assert service["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
    topics = _services("docker-compose.yml")["topics"]
    assert topics["command"][:2] == ["topics", "apply"] and topics["restart"] == "no"


def test_prometheus_scrapes_every_worker_and_the_escalator_in_both_setups() -> None:
    """The bridge-network config discovers every worker service and the escalator by name; the host-network
    override's generated config has one 127.0.0.1 target per process, each at the port that process is given."""
    jobs = {job["job_name"]: job for job in _load("prometheus.yml")["scrape_configs"]}
    names = {n for job in jobs.values() for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert names == {*_workers(), "escalator"}

    hostnet = _services("docker-compose.hostnet.yml")
    script = hostnet["prometheus"]["command"][0]
    scraped = set(re.findall(r"127\.0\.0\.1:\$\{(MINNOW_METRICS_PORT_\w+):-\d+\}", script))
    ports = [
        port
        for service in hostnet.values()
        for key, port in service.get("environment", {}).items()
        if key.endswith("METRICS_PORT")
    ]
    given = {match.group(1) for port in ports if (match := re.fullmatch(r"\$\{(\w+):-\d+\}", port))}
    assert len(given) == len(ports)  # every port from a variable of its own
    assert scraped == given and len(given) == len(_workers()) + 1


def test_the_host_network_override_puts_every_service_on_the_host_network_at_127_0_0_1() -> None:
    """Each service of the base file runs with network_mode host in the override (Grafana only behind a profile),
    and no address in it is anything but 127.0.0.1."""
    base, hostnet = _services("docker-compose.yml"), _services("docker-compose.hostnet.yml")
    assert set(hostnet) == set(base)
    assert all(service["network_mode"] == "host" for service in hostnet.values())
    assert hostnet["grafana"]["profiles"] == ["grafana"]
    lines = (COMPOSE / "docker-compose.hostnet.yml").read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    hosts = set(re.findall(r"(?:://|@|\[\")([A-Za-z0-9.-]+):(?:\$|\d)", text))
    assert hosts == {"127.0.0.1"}
    for service in hostnet.values():
        if "build" in service:
            assert service["build"]["network"] == "host"
