"""``/web``'s links (the ``dialogs.ports.WebLinks`` port): a single-use token in the pages' state,
put in a link to the server users reach."""

from __future__ import annotations

from dialogs.models import UserKey
from dialogs.ports import LINK_MINUTES
from platforms import web
from platforms.web.state import WebState


class PageLinks:
    def __init__(self, state: WebState, base_url: str) -> None:
        self.state = state
        self.base_url = base_url
        """``[web] public_url``; ``yibao chat`` sets its own loopback address once it listens."""

    async def link(self, user: UserKey) -> str:
        token = await self.state.issue_link(user, LINK_MINUTES * 60)
        return web.url(self.base_url, web.LINK.format(token=token))
