"""Everything that knows Redis: the key builder, the codec, the store, streams, the embedded server.

- ``keys.py``: every Redis key, under one prefix, a user's keys in one ``{hash tag}``.
- ``codec.py``: records to and from their stored form, personal numbers sealed (``bot.crypto``).
- ``store.py``: the dialogs' ``UserStore`` port: state read in one round trip, writes under a guard.
- ``streams.py``: Redis Streams consumer groups, shared by the alert checks and the outbox.
- ``embedded_redis.py``: a private ``redis-server`` child for the demo and the tests (its AOF
  rewritten at least daily, so erased data leaves the disk).
- ``health.py``: waiting for Redis at start, and one log line when it goes and one when it is back.
- ``connect.py``: the client from ``[redis]``: one server, a Sentinel-watched primary, or a Cluster.
- ``batch.py``: pipelines on any topology (split by node on a cluster), and ``WAIT`` after the writes
  that must survive a failover.

May import ``bot.crypto``, ``dialogs`` and ``redis``; nothing above it (alerts, identity, app, cli).
"""
