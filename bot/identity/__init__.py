"""Proving who a chatter is before they see anyone's account: SMS codes and the gateways that send them.

- ``otp.py``: the dialogs' ``OtpPort``: codes generated, hashed, limited, checked; bind lockouts.
- ``sms.py``: SMS gateways (the console's, a JSON-lines file for the operator's own sender).

May import ``bot.storage`` (keys), ``bot.crypto`` and ``dialogs``; not ``bot.alerts``, ``bot.app``
or ``bot.cli``.
"""
