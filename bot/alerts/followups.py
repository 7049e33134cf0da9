"""Work a conversation leaves running after its answer (following a face check), whose replies go
to the user unprompted through their chat platform's ``Outlet``, like an alert.

Every task is kept (never a bare ``create_task``), runs at most once per key at a time, is bounded
by ``limit_seconds``, and is cancelled by ``aclose``. A platform with no outlet registered (a
process serving no chat, a test) still runs the work, whose outcome is saved as the user's next
message would have saved it; only the unprompted message is not sent, and the user is answered
when they write again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.alerts.outbox import chat_platform
from dialogs.models import Reply, UserKey
from dialogs.ports import Outlet

log = logging.getLogger(__name__)


class BackgroundFollowups:
    def __init__(self, *, limit_seconds: float) -> None:
        self.limit_seconds = limit_seconds
        self.outlets: dict[str, Outlet] = {}
        """Chat platform (user-key prefix) -> where its unprompted messages go; filled by the runner."""
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, user: UserKey, key: str, work: Callable[[], Awaitable[tuple[Reply, ...]]]) -> None:
        if key in self._tasks:
            return
        self._tasks[key] = asyncio.get_running_loop().create_task(self._run(user, key, work))

    def running(self) -> int:
        return len(self._tasks)

    async def _run(self, user: UserKey, key: str, work: Callable[[], Awaitable[tuple[Reply, ...]]]) -> None:
        try:
            async with asyncio.timeout(self.limit_seconds):
                replies = await work()
                outlet = self.outlets.get(chat_platform(user))
                if replies and outlet is not None:
                    await outlet.deliver(user, replies)
                elif replies:
                    log.info(
                        "follow-up for %s: no outlet for its chat platform; it hears on its next message",
                        user,
                    )
        except TimeoutError:
            log.warning("follow-up for %s gave up after %.0f s", user, self.limit_seconds)
        except Exception:
            log.exception("follow-up for %s failed", user)
        finally:
            self._tasks.pop(key, None)

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
