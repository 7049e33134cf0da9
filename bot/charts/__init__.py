"""The ``/chart`` picture: ``drawing.py`` implements the dialogs' chart port with matplotlib (imported
only when a chart is drawn). May import ``dialogs``; nothing else of ``bot``."""
