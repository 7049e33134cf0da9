"""What the pages keep, shared by every instance: implemented in Redis by ``bot.storage.web``.

- **Link tokens** (``/web`` in the chat): random, single use (taken with ``GETDEL``, so two
  instances agree and a second use finds nothing), valid ``LINK_MINUTES``, stored by their hash.
- **Sessions**: a random id in a cookie; stored by its hash, with the user key encrypted and the
  session's CSRF token, expiring after ``[web] session_seconds`` without use. Each user's sessions
  are listed under the user's own keys, which ``/unbind`` and every erasure delete: a session whose
  user was erased is over, whatever instance asks.
- **Rate limits**: a counter per bucket (a client address, a session) and window.

Every method raises ``dialogs.ports.StoreUnavailable`` when the store cannot be reached (the page
answers 503).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dialogs.models import UserKey


@dataclass(frozen=True, slots=True)
class PageSession:
    user: UserKey
    csrf: str
    """This session's CSRF token: every form carries it, every POST must."""


class WebState(Protocol):
    async def issue_link(self, user: UserKey, ttl_seconds: int) -> str:
        """A new single-use token for ``user``, valid ``ttl_seconds``."""
        ...

    async def take_link(self, token: str) -> UserKey | None:
        """The token's user, once: a second call, or one after it expired, gives None."""
        ...

    async def open_session(self, user: UserKey, ttl_seconds: int) -> tuple[str, PageSession]:
        """A new session for ``user``: its id (for the cookie, never stored as it is) and the session."""
        ...

    async def session(self, session_id: str, ttl_seconds: int) -> PageSession | None:
        """The session of this id, its idle time restarted; None when it is unknown, expired, or
        its user was erased since."""
        ...

    async def close_session(self, session_id: str) -> None: ...

    async def allow(self, bucket: str, limit: int, window_seconds: int) -> bool:
        """Count one more request in ``bucket``; False once it has had ``limit`` in the window."""
        ...
