"""Which library drives Telegram: ``build_engine`` imports only the one asked for."""

from __future__ import annotations

from platforms.telegram.core import TelegramCore
from platforms.telegram.options import Engine, EngineName, TelegramOptions


def build_engine(name: EngineName, core: TelegramCore, options: TelegramOptions) -> Engine:
    if name == "ptb":
        from platforms.telegram.ptb_engine import PtbEngine

        return PtbEngine(core, options)
    from platforms.telegram.aiogram_engine import AiogramEngine

    return AiogramEngine(core, options)
