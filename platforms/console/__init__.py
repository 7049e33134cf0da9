"""The terminal as a chat platform (``yibao chat``)."""

from platforms.console.adapter import ConsoleAdapter

__all__ = ["ConsoleAdapter"]
