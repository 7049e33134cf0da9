"""The insurance side: the platform contract, and implementations of it (the sandbox).

Knows nothing about chats, dialogs or Redis; ``bot/`` adapts it to the conversation's port.
"""
