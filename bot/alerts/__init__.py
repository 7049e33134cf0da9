"""Low-balance alerts: rounds of scheduled checks, one alert per crossing, a durable outbox.

- ``schedule.py``: when a round starts, each user's offset in it, quiet hours.
- ``checks.py``: due users into batches, batches into balance calls, crossings into the outbox.
- ``outbox.py``: the alerts waiting to be sent, and the sender that delivers each once.
- ``worker.py``: the loops that run the checks and the senders and outlive outages.

May import ``bot.storage``, ``bot.insurers``, ``bot.crypto``, ``bot.config``, ``dialogs`` and
``redis``; never ``bot.app`` or ``bot.cli`` (they build an ``AlertWorker``, not the other way round)
nor a chat platform (senders deliver through the dialogs' ``Outlet`` port).
"""
