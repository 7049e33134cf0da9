"""The operator's records, which hold no personal data: the audit trail and the daily figures.

- ``trail.py``: the append-only, capped audit stream in Redis (and optionally a file): binds, unbinds,
  lockouts, erasures, exports; who is a keyed hash of the user key, never the user.
- ``figures.py``: aggregate counts by day (the bind funnel, alerts, answer latency, insurance
  errors) for ``yibao admin stats``.
- ``events.py``: the dialogs' ``EventSink``: a turn's events into the metrics, the figures and the trail.

May import ``storage`` (keys), ``metrics``, ``config``, ``clock``, ``crypto``; not ``identity`` or ``http``.
"""
