"""Every ``yibao …`` command, the top layer of ``bot`` (nothing else here imports it).

- ``main.py``: the argument parser and ``yibao chat``, ``config check``; the console entry point.
- ``run.py``: ``yibao run`` (a chat platform, the HTTP server, the alert work) and ``yibao worker``.
- ``sandbox.py``: ``yibao sandbox …``: the sandbox's people, its HTTP server, changes to a running one.

May import anything of ``bot``, ``platforms``, ``dialogs`` and ``insurance``.
"""
