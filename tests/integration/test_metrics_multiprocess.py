"""``PROMETHEUS_MULTIPROC_DIR``: processes forked behind one scrape target add up their metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

COUNT = """
from bot import metrics
metrics.UPDATES.labels("tg", "balance").inc(3)
metrics.OUTBOX_DEPTH.labels("tg").set({depth})
"""
RENDER = "import sys; from bot import metrics; sys.stdout.write(metrics.render()[0].decode())"


def test_two_processes_are_scraped_as_one(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for depth in (4, 7):
        subprocess.run([sys.executable, "-c", COUNT.format(depth=depth)], env=env, check=True, timeout=60)
    text = subprocess.run(
        [sys.executable, "-c", RENDER], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("yibao_updates_total", (("kind", "balance"), ("platform", "tg")))] == 6
    # gauges: the largest of the processes' values (the outbox is one, read by each)
    assert samples[("yibao_outbox_depth", (("platform", "tg"),))] == 7
