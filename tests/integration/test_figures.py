"""The operator's figures (``yibao admin stats``) from real turns: binds that succeed and fail, alerts
checked and sent, answers timed; aggregates only, every group under 5 shown as "<5"; the picture.

``YIBAO_STATS_PNG=path`` keeps a copy of the picture drawn here, to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import HarnessFactory, person

from bot.audit.report import build_report, shown
from bot.cli.stats_png import draw
from dialogs.models import Inbound, Reply, UserKey


class Collect:
    def __init__(self) -> None:
        self.sent: list[UserKey] = []

    async def deliver(self, user: UserKey, replies: tuple[Reply, ...]) -> None:
        self.sent.append(user)


async def test_the_figures_of_a_day(make_harness: HarnessFactory, tmp_path: Path) -> None:
    h = await make_harness(
        otp={"max_per_hour_per_phone": 100, "max_per_hour_per_user": 100, "resend_interval_seconds": 0},
        alerts={"quiet_hours": "", "jitter_seconds": 0},
    )
    rt = h.runtime

    async def say(user: str, text: str) -> str:
        replies = await rt.handle(Inbound(user=UserKey(user), text=text, locale="en"))
        return "\n".join(r.text for r in replies)

    normal = [person("normal", i) for i in range(12)]
    users = [f"tg:{7000 + i}" for i in range(9)] + [f"console:c{i}" for i in range(3)]
    for user, who in zip(users, normal, strict=True):
        await say(user, "/bind")
        await say(user, who.name)
        assert "Step 3 of 3" in await say(user, who.id_number)
        code = h.last_code()
        if user.endswith("1"):
            await say(user, f"{(int(code) + 1) % 1_000_000:06d}")  # one wrong try first
        assert "bound" in await say(user, code)
    for user in users[:7]:
        await say(user, "/alert 50000")
    # two binds that fail: a name that does not match, then the user gives up
    for user in ("tg:7100", "tg:7101"):
        await say(user, "/bind")
        await say(user, "王小明")
        assert "does not match" in await say(user, normal[0].id_number)

    outlet = Collect()
    worker = rt.alert_worker({"tg": outlet, "console": outlet})
    assert worker.checker is not None
    assert await worker.checker.move_due() == 7
    await worker.checker.work(block_ms=50)
    for sender in worker.senders:
        await sender.work(block_ms=50)
    assert sorted(outlet.sent) == sorted(users[:7])

    assert rt.figures is not None
    await rt.figures.flush()
    report = await build_report(rt.redis, rt.keys, rt.figures, 1)
    assert report.users == {("sandbox", "tg"): [9, 7], ("sandbox", "console"): [3, 0]}
    assert report.funnel["tg"] == {"started": 11, "code_sent": 9, "bound": 9}
    assert report.funnel["console"] == {"started": 3, "code_sent": 3, "bound": 3}
    assert report.failures == {"code_wrong": 2, "identity_mismatch": 2}
    assert report.alerts["sent"][""] == 7
    assert report.latency["tg"]["count"] >= 40
    assert report.latency["tg"]["p50"] is not None
    assert report.insurers[("sandbox", "lookup")][0] == 14

    text = report.as_text()
    assert "sandbox          console  bound     <5  subscribed      0" in text
    assert "code_wrong" in text
    assert "<5" in text
    for user in users:
        assert user not in text
    assert [shown(n) for n in (0, 1, 4, 5, 12)] == ["0", "<5", "<5", "5", "12"]

    png = draw(report)
    assert png.startswith(b"\x89PNG")
    out = tmp_path / "stats.png"
    out.write_bytes(png)
    keep = os.environ.get("YIBAO_STATS_PNG")
    if keep:
        shutil.copy(out, keep)
