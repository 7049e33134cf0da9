"""Chat-platform adapters: a platform's updates in as ``Inbound``, ``Reply`` out as its calls."""
