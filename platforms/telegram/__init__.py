"""Telegram through python-telegram-bot 22: updates in as ``Inbound``, ``Reply`` out as Bot API calls."""
