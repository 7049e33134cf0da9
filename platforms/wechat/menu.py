"""The official account's custom menu: 查余额 / 消费记录 / 更多 (余额提醒, 帮助), ``click`` buttons whose key
names the command each stands for (WeChat allows at most 3 buttons in the bar, 5 under each). ``yibao wechat menu`` sets it (``menu/create``) in the default
language, and an English one (``menu/addconditional``, matched on the WeChat client's language)."""

from __future__ import annotations

from typing import Any

from dialogs.i18n import Translator

MENU_COMMANDS = {
    "YIBAO_BALANCE": "/balance",
    "YIBAO_HISTORY": "/history",
    "YIBAO_ALERT": "/alert",
    "YIBAO_HELP": "/help",
}


def menu(t: Translator) -> dict[str, Any]:
    labels = {
        "YIBAO_BALANCE": t.gettext("Balance"),
        "YIBAO_HISTORY": t.gettext("Payments"),
        "YIBAO_ALERT": t.gettext("Alerts"),
        "YIBAO_HELP": t.gettext("Help"),
    }

    def click(key: str) -> dict[str, Any]:
        return {"type": "click", "name": labels[key], "key": key}

    more = {"name": t.gettext("More"), "sub_button": [click("YIBAO_ALERT"), click("YIBAO_HELP")]}
    return {"button": [click("YIBAO_BALANCE"), click("YIBAO_HISTORY"), more]}


def conditional_menu(t: Translator, language: str) -> dict[str, Any]:
    """The menu for WeChat clients in ``language`` (``en``, ``zh_CN``...)."""
    return {**menu(t), "matchrule": {"language": language}}
