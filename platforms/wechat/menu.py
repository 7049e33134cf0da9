"""The official account's custom menu: 查余额 / 消费记录 / 更多 (打开网页, 余额提醒, 帮助): ``click``
buttons whose key names the command each stands for, and, with the pages on (``[web]``), a ``view``
button that opens them (WeChat allows at most 3 buttons in the bar, 5 under each). ``yibao wechat
menu`` sets it (``menu/create``) in the default language, and an English one (``menu/addconditional``,
matched on the WeChat client's language). The WeCom app's menu (``yibao wecom menu``) has the same
shape, with its own page entry."""

from __future__ import annotations

from typing import Any

from dialogs.i18n import Translator

MENU_COMMANDS = {
    "YIBAO_BALANCE": "/balance",
    "YIBAO_HISTORY": "/history",
    "YIBAO_ALERT": "/alert",
    "YIBAO_HELP": "/help",
}


def menu(t: Translator, page_url: str | None = None) -> dict[str, Any]:
    """``page_url``: where the "open the page" entry leads (``<public_url>/web/wx`` or
    ``/web/wecom``); None: no such entry."""
    labels = {
        "YIBAO_BALANCE": t.gettext("Balance"),
        "YIBAO_HISTORY": t.gettext("Payments"),
        "YIBAO_ALERT": t.gettext("Alerts"),
        "YIBAO_HELP": t.gettext("Help"),
    }

    def click(key: str) -> dict[str, Any]:
        return {"type": "click", "name": labels[key], "key": key}

    more = [click("YIBAO_ALERT"), click("YIBAO_HELP")]
    if page_url is not None:
        more.insert(0, {"type": "view", "name": t.gettext("Open the page"), "url": page_url})
    return {
        "button": [
            click("YIBAO_BALANCE"),
            click("YIBAO_HISTORY"),
            {"name": t.gettext("More"), "sub_button": more},
        ]
    }


def conditional_menu(t: Translator, language: str, page_url: str | None = None) -> dict[str, Any]:
    """The menu for WeChat clients in ``language`` (``en``, ``zh_CN``...)."""
    return {**menu(t, page_url), "matchrule": {"language": language}}
