"""The one HTTP server of a process (``server.py``): uvicorn and Starlette on ``[http]``
``listen_host:listen_port``, ``GET /healthz``, and the routes each chat platform mounts on it (the
Telegram webhook today; WeChat and WeCom callbacks, pages and metrics go beside it).

May import ``starlette`` and ``uvicorn``; nothing of Yibao: the platforms hand it Starlette routes,
and ``bot.cli`` decides which.
"""
