"""Data-subject rights (PIPL arts. 44-47): what is kept about a user, their export and their erasure.

- ``subject.py``: ``SubjectData``, the one list of everything kept about a user (masked), which is
  both what ``/mydata`` shows (the dialogs' ``DataInventory`` port) and what ``yibao admin export``
  writes; and the erasure ``yibao admin erase`` does (the same script as ``/unbind``, then the
  user's traces in the shared alert keys and the limits keyed by their phone and ID number).

Above ``alerts`` in the layers (it finds the user in the outbox): may import ``alerts`` and below.
"""
