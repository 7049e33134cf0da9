"""Telegram on either of its Python libraries.

- ``core.py``: what Yibao does on Telegram, library-free: updates in as ``Inbound`` (one user's in
  order), replies out as calls, deleting personal data, 403 -> unreachable; the alerts' ``Outlet``.
- ``ratelimit.py``: the send schedule (30/s for the bot, 1/s a chat, 20/min a group) and the retry
  rules (429 ``retry_after``, network errors, never a timed-out send).
- ``render.py``: HTML escaping and splitting below Telegram's limits.
- ``ptb_engine.py`` (python-telegram-bot 22) and ``aiogram_engine.py`` (aiogram 3): each library's
  part, for ``yibao run`` and for mounting into an operator's existing bot; ``engines.py`` picks one.
- ``webhook.py``: the webhook route for the process's one HTTP server.

May import ``dialogs``, ``telegram``/``aiogram`` and ``starlette``; not ``redis``, ``insurance`` or ``bot``.
"""
