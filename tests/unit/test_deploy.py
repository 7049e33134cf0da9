"""``deploy/``: the systemd units are sandboxed, the Grafana dashboard shows every metric and only
metrics that exist, and the Prometheus files pass ``promtool`` where it is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from bot import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SANDBOXING = ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes")


@pytest.mark.parametrize(
    ("unit", "command"), [("yibao-run.service", "run"), ("yibao-worker@.service", "worker")]
)
def test_the_units_are_sandboxed(unit: str, command: str) -> None:
    text = (DEPLOY / "systemd" / unit).read_text(encoding="utf-8")
    lines = set(text.splitlines())
    for option in SANDBOXING:
        assert option in lines, option
    assert any(line.startswith("StateDirectory=") for line in lines)
    assert any(line.startswith("ExecStart=") and line.split()[1] == command for line in lines)
    assert "PII_KEY=" not in text  # secrets come as credentials, never inline


def ours() -> set[str]:
    """Every metric bot/metrics.py defines (counters by their name without ``_total``)."""
    return {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}


def test_the_dashboard_shows_every_metric_and_no_other() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "yibao-dashboard.json").read_text(encoding="utf-8"))
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in re.findall(r"\byibao_[a-z_]+", exprs)}
    assert used == ours()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_scrape_config_and_the_rules() -> None:
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "yibao-rules.yml"]):
        done = subprocess.run(["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
