"""Prometheus's naming rules (https://prometheus.io/docs/practices/naming/), checked on an
exposition text: by ``promtool check metrics`` when it is installed, and always by ``check_names``."""

from __future__ import annotations

import re
import shutil
import subprocess

from prometheus_client.parser import text_string_to_metric_families

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def check_names(text: str) -> list[str]:
    """Prometheus's naming rules for our metrics (https://prometheus.io/docs/practices/naming/)."""
    problems = []
    for family in text_string_to_metric_families(text):
        name = family.name
        if not name.startswith("yibao_"):
            continue
        if not _NAME.match(name):
            problems.append(f"{name}: not a valid metric name")
        totals = [s for s in family.samples if not s.name.endswith("_created")]
        if family.type == "counter" and totals and not all(s.name == name + "_total" for s in totals):
            problems.append(f"{name}: a counter without _total")
        if family.type != "counter" and name.endswith("_total"):
            problems.append(f"{name}: _total on a {family.type}")
        if re.search(r"_(ms|milliseconds|minutes|hours|bytes_kb)(_|$)", name):
            problems.append(f"{name}: not in base units")
        for sample in family.samples:
            for label in sample.labels:
                if not _LABEL.match(label) or label.startswith("__"):
                    problems.append(f"{name}: bad label {label}")
                if label in ("user", "phone", "chat_id", "id_number", "name", "openid"):
                    problems.append(f"{name}: a personal label {label}")
    return problems


def promtool_problems(text: str) -> str | None:
    promtool = shutil.which("promtool")
    if promtool is None:
        return None
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    return done.stdout + done.stderr if done.returncode != 0 else ""
