"""The operator's key and what it seals: ID and phone numbers encrypted at rest, keyed hashes to find
them. The lowest layer of ``bot``: imports nothing of Yibao, so anything may use it."""
