"""Yibao's conversation core: a platform-neutral state machine over ports.

Nothing here imports a chat SDK, Redis, HTTP or the runtime; see ``ports.py`` for what the
outside must provide and ``machine.py`` for the conversation itself.
"""
