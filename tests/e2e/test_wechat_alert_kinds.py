"""The other alert kinds on WeChat (``/alert credit on``, ``/alert family on``): Yibao's WeChat core
over the emulator on loopback, its state in the test run's Redis. Outside the 48-hour window the
low-balance alert goes as the subscription message the user accepted, with its figures in the
template's keys; a credit or family alert has no such figures, so it is not squeezed into that
template: it is held, and given with the user's next answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from wechat_emulator import WechatEmulator

from bot.app import Runtime, build_runtime
from bot.config import Settings
from bot.crypto.pii import new_key_text
from bot.http.server import HttpServer
from dialogs.crossing import AlertFacts, alert_replies
from dialogs.i18n import Catalogs
from dialogs.models import UserKey
from dialogs.notices import CreditFacts, credit_replies
from dialogs.ports import Held
from platforms.tencent.routes import callback_routes

TEMPLATE = "TPL_low_balance"


@pytest.fixture
def emulator() -> Iterator[WechatEmulator]:
    with WechatEmulator() as emu:
        yield emu


@pytest.fixture
async def runtime(
    emulator: WechatEmulator, redis_settings: dict[str, Any], tmp_path: Any
) -> AsyncIterator[Runtime]:
    settings = Settings(
        general={"data_dir": tmp_path / "data"},  # type: ignore[arg-type]
        redis=redis_settings,  # type: ignore[arg-type]
        security={"pii_key": new_key_text()},  # type: ignore[arg-type]
        sms={"gateway": "file", "file_path": tmp_path / "sms.jsonl"},  # type: ignore[arg-type]
        wechat={  # type: ignore[arg-type]
            "app_id": emulator.app_id,
            "app_secret": emulator.app_secret,
            "token": emulator.token,
            "api_base_url": emulator.url,
            "alert_template_id": TEMPLATE,
        },
    )
    rt = await build_runtime(settings)
    yield rt
    await rt.aclose()


async def test_outside_the_window_a_credit_alert_is_held_and_a_low_balance_one_is_subscribed(
    emulator: WechatEmulator, runtime: Runtime
) -> None:
    core, guard = runtime.wechat_core()
    server = HttpServer(host="127.0.0.1", port=0)
    server.mount(callback_routes(core, guard, path="/wechat"))
    await server.start()
    emulator.callback_url = f"http://127.0.0.1:{server.port}/wechat"
    user = emulator.user()
    key = UserKey(f"wx:{user.openid}")
    # The user follows and accepts the alert template twice (each acceptance allows one message),
    # through the real callback; then 49 hours pass without a word from them: outside the window.
    await asyncio.to_thread(user.follows)
    for _ in range(2):
        await asyncio.to_thread(user.accepts, TEMPLATE)
    emulator.advance(49 * 3600)
    t = Catalogs().get("zh")
    tz = UTC
    credit = credit_replies(
        t,
        CreditFacts(month="2026-12", amount=Decimal("326.00"), credited_at=datetime(2026, 12, 7, tzinfo=UTC)),
        tz,
    )
    with pytest.raises(Held):
        await core.deliver(key, credit)
    assert emulator.calls_to("/cgi-bin/message/subscribe/bizsend") == []
    held = await core.state.take_held(key)
    assert held is not None
    assert "¥326.00" in held
    await core.state.hold(key, held)  # back, as it was: given with the next answer

    low = alert_replies(
        t,
        AlertFacts(
            balance=Decimal("32.63"), threshold=Decimal("50"), as_of=datetime(2026, 12, 2, tzinfo=UTC)
        ),
        tz,
    )
    await core.deliver(key, low)  # the acceptance the credit alert left unused
    [sent] = emulator.calls_to("/cgi-bin/message/subscribe/bizsend")
    assert sent["template_id"] == TEMPLATE
    assert "¥32.63" in str(sent["data"])
    await server.stop()
    await core.aclose()
