"""The insurance platforms this runtime reaches: ``registry.py`` routes each member to their
platform's client (``insurance.client``) behind the dialogs' insurance port, and turns the contract's
problems into the dialogs' words. May import ``insurance`` and ``dialogs``; nothing else of ``bot``."""
