"""Yibao inside an operator's existing bot, rather than as a bot of its own.

- ``telegram.py``: ``YibaoOnTelegram``: a Yibao runtime whose Telegram core answers through the
  host's bot: a fresh aiogram ``Router`` for the host's ``Dispatcher``, or handlers added to the
  host's PTB ``Application``; the alert work in the host's process if it wants it.

A top layer, beside ``bot.cli``: it may import anything of ``bot`` and ``platforms``; nothing else of
``bot`` imports it.
"""
