"""The runtime that wires Yibao together, one folder a capability.

- ``app.py``: the one place that builds everything from the settings (the CLI and the tests call it).
- ``config.py``: the settings model, read from TOML and the environment.
- ``clock.py``, ``logs.py``: the wall clock, and logging with personal numbers masked (text or JSON lines).
- ``metrics.py``: every Prometheus metric (``/metrics``); imports nothing of Yibao.
- ``cli/``: every ``yibao …`` command; the top layer, imported by nothing else here.
- ``hosting/``: Yibao mounted into an operator's own bot (aiogram or PTB); beside ``cli/`` at the top.
- ``http/``: the one HTTP server of a process; platforms mount their routes on it.
- ``privacy/``: what is kept about a user (``/mydata``, ``yibao admin export``) and their erasure.
- ``alerts/``: the schedule, the checks, the outbox and the worker loops.
- ``audit/``: the operator's records, with no personal data: the audit trail, the daily figures and
  ``yibao admin stats``'s report, and the dialogs' ``EventSink`` that feeds them and the metrics.
- ``identity/``: proving who a chatter is: SMS codes (OTP) and SMS gateways.
- ``storage/``: everything that knows Redis: keys, the codec, the store, streams, the embedded server.
- ``insurers/``: the insurance platforms this runtime reaches, behind the dialogs' insurance port.
- ``charts/``: the ``/chart`` picture.
- ``crypto/``: the operator's key and what it seals (ID and phone numbers); imports nothing of Yibao.

The layers, top to bottom (``[tool.importlinter]`` in ``pyproject.toml`` checks them, and that no
two modules import each other): cli, hosting; app; privacy; alerts; identity, http, audit; storage,
insurers, charts; config, logs, clock, metrics; crypto. ``docs/architecture.md`` draws the house.
"""
