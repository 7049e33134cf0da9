"""Yibao's pages in a real browser (Debian's headless Chromium through Selenium), served by a real
``yibao chat`` with ``[web] enabled``: ``/web`` in the chat prints the link, the page binds with the
SMS code from the ``file`` gateway, shows the account as ``/balance`` says it, sets an alert that the
chat then reports, and unbinds; a reused link, a form without its CSRF token, and a tampered or expired
Mini App initData are refused in the browser too. Screenshots at phone (390×844) and desktop (1280×800) size go to
pytest's temporary folder (not the repository), each checked for a horizontal scroll and for a
character drawn as a missing glyph (the shared fixture and checks of ``tests/e2e/browser.py``).

One browser and one chat for the module. Skipped only without Chromium, and never under ``CI``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from browser import artifacts_dir, assert_no_horizontal_scroll, assert_no_missing_glyphs, at_size, screenshot
from browser import browser as browser  # the module's fixture
from chat_process import Chat, clean_env, demo, free_port, wait_for_line
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

from bot.crypto.pii import new_key_text

SIZES = {"phone": (390, 844), "desktop": (1280, 800)}
BOT_TOKEN = "123456:AAbrowserTestTokenAbcdefghijklmnopqr"


@pytest.fixture(scope="module")
def shots(browser: WebDriver) -> Path:
    return artifacts_dir(browser)


class Demo:
    def __init__(self, chat: Chat, sms: Path) -> None:
        self.chat = chat
        self.sms = sms

    def code(self, after: int, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.sms.read_text(encoding="utf-8").splitlines() if self.sms.exists() else []
            if len(lines) > after:
                return re.search(r"\b(\d{6})\b", json.loads(lines[-1])["text"])[1]  # type: ignore[index]
            time.sleep(0.05)
        raise AssertionError("no SMS")

    def sms_count(self) -> int:
        return len(self.sms.read_text(encoding="utf-8").splitlines()) if self.sms.exists() else 0


@pytest.fixture(scope="module")
def yibao(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Demo]:
    folder = tmp_path_factory.mktemp("web-demo")
    sms = folder / "sms.jsonl"
    env = clean_env(
        YIBAO_REDIS__URL=redis_url,
        YIBAO_REDIS__PREFIX="webbrowser",
        YIBAO_SECURITY__PII_KEY=new_key_text(),
        YIBAO_GENERAL__DATA_DIR=str(folder / "data"),
        YIBAO_SMS__GATEWAY="file",
        YIBAO_SMS__FILE_PATH=str(sms),
        YIBAO_WEB__ENABLED="true",
        YIBAO_HTTP__LISTEN_PORT=str(free_port()),
        YIBAO_ALERTS__ENABLED="false",
        YIBAO_TELEGRAM__TOKEN=BOT_TOKEN,  # only for the Mini App's initData here: `yibao chat` never calls Telegram
        LANG="C.UTF-8",
    )
    chat = Chat(env, folder)
    try:
        yield Demo(chat, sms)
    finally:
        chat.close()


def open_page(browser: WebDriver, yibao: Demo) -> None:
    """``/web`` in the chat, and its link opened: the browser ends on a page of its session."""
    answer = yibao.chat.say("/web")
    link = re.search(r"http://127\.0\.0\.1:\d+/web/l/\S+", answer)
    assert link, answer
    browser.get(link[0])
    assert "/web/l/" not in browser.current_url  # the token is not left in the address bar


def shoot(browser: WebDriver, shots: Path, name: str) -> None:
    """Screenshots at phone and desktop size, each without a horizontal scroll and without a
    character drawn as a missing glyph."""
    for size, (width, height) in SIZES.items():
        at_size(browser, width, height)
        assert_no_horizontal_scroll(browser)
        assert_no_missing_glyphs(browser)
        assert screenshot(browser, f"{name}-{size}").exists()
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # type: ignore[attr-defined]


def submit(browser: WebDriver, selector: str) -> None:
    """Press the button and wait for the page it leads to."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, selector).click()
    WebDriverWait(browser, 15).until(staleness_of(old))


def send(browser: WebDriver, field_id: str) -> None:
    """Submit the form of this field and wait for the page it leads to."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, field_id).submit()
    WebDriverWait(browser, 15).until(staleness_of(old))


def test_bind_on_the_page(browser: WebDriver, yibao: Demo, shots: Path) -> None:
    who = demo("normal")
    open_page(browser, yibao)
    assert browser.current_url.endswith("/web/bind")  # not bound yet
    shoot(browser, shots, "bind-start")
    submit(browser, "button[value='/bind']")
    assert "继续即表示你同意" in browser.page_source
    field = browser.find_element(By.ID, "id_number")
    assert field.get_attribute("autocomplete") == "off"
    assert field.get_attribute("inputmode") == "numeric"
    shoot(browser, shots, "bind-identity")
    sent = yibao.sms_count()
    browser.find_element(By.ID, "name").send_keys(who.name)
    field.send_keys(who.id_number)
    submit(browser, "form button[type=submit]:not([name])")
    assert "第 3 步" in browser.page_source, browser.page_source
    shoot(browser, shots, "bind-code")
    browser.find_element(By.ID, "code").send_keys(yibao.code(sent))
    send(browser, "code")
    assert "你的医保账户已绑定" in browser.page_source
    told = wait_for_line(yibao.chat, "网页上")  # the chat hears what the page did
    assert "已绑定" in told
    assert who.id_number not in browser.page_source


def test_the_account_page_shows_what_balance_says(browser: WebDriver, yibao: Demo, shots: Path) -> None:
    balance = yibao.chat.say("/balance")
    browser.get(browser.current_url.rsplit("/web/", 1)[0] + "/web/account")
    personal = browser.find_element(By.ID, "personal").text
    assert personal
    assert personal in balance
    assert browser.find_element(By.ID, "pooled-used").text in balance
    assert browser.find_element(By.ID, "pooled-remaining").text in balance
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")  # the months' spending
    shoot(browser, shots, "account")


def test_an_alert_set_on_the_page_reaches_the_chat(browser: WebDriver, yibao: Demo, shots: Path) -> None:
    submit(browser, "header nav a[href='/web/alert']")
    browser.find_element(By.ID, "amount").send_keys("100")
    send(browser, "amount")
    assert "¥100.00" in browser.find_element(By.ID, "current").text
    told = wait_for_line(yibao.chat, "¥100.00")
    assert "网页" in told
    shoot(browser, shots, "alert")


def test_unbind_on_the_page(browser: WebDriver, yibao: Demo, shots: Path) -> None:
    submit(browser, "header nav a[href='/web/unbind']")
    shoot(browser, shots, "unbind")
    submit(browser, "button[value='/unbind yes']")
    assert "已删除" in browser.page_source
    wait_for_line(yibao.chat, "已删除")
    assert "/bind" in yibao.chat.say("/balance")
    browser.get(browser.current_url.rsplit("/web/", 1)[0] + "/web/account")
    assert "/web" in browser.page_source  # the session ended with the erasure: a page saying how to get back
    assert browser.find_elements(By.CSS_SELECTOR, "h1")


def test_a_reused_link_and_a_form_without_its_csrf_token_are_refused(browser: WebDriver, yibao: Demo) -> None:
    answer = yibao.chat.say("/web")
    link = re.search(r"http://127\.0\.0\.1:\d+/web/l/\S+", answer)
    assert link, answer
    browser.delete_all_cookies()
    browser.get(link[0])
    assert browser.current_url.endswith("/web/bind")
    browser.get(link[0])  # a second time: refused, as a page in the user's language
    assert "此链接无法打开" in browser.page_source
    browser.back()
    browser.get(browser.current_url.rsplit("/web/", 1)[0] + "/web/bind")
    # The form without its CSRF token (as a forged one would come): refused, nothing done.
    browser.execute_script("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    submit(browser, "button[value='/bind']")
    assert "无法继续" in browser.page_source
    assert "继续即表示你同意" not in browser.page_source


def signed_init_data(user_id: int, *, age: float = 0) -> str:
    """initData as Telegram signs it (core.telegram.org/bots/webapps), by this test's own signer."""
    fields = {
        "auth_date": str(int(time.time() - age)),
        "user": json.dumps({"id": user_id, "first_name": "T"}),
    }
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    secret = hmac.new(b"WebAppData", BOT_TOKEN.encode(), hashlib.sha256).digest()
    return urlencode({**fields, "hash": hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()})


def test_the_mini_app_hands_over_init_data(browser: WebDriver, yibao: Demo) -> None:
    """The one page with script, in the browser: Telegram's script (blocked here: no Telegram to
    reach) stands in as ``window.Telegram``, and the page's own nonce'd script posts ``initData``."""
    base = browser.current_url.rsplit("/web/", 1)[0]
    browser.delete_all_cookies()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*telegram.org*"]})
    stand_in = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.Telegram = {WebApp: {initData: "
            + json.dumps(signed_init_data(777001))
            + ", ready: function () {}}};"
        },
    )
    try:
        browser.get(base + "/web/tg")
        WebDriverWait(browser, 15).until(lambda b: b.current_url.endswith("/web/bind"))
        assert "开始绑定" in browser.page_source  # tg:777001 has a session, and is not bound
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", stand_in)
        # Tampered (another user id under the first one's hash) and expired initData: refused.
        good = signed_init_data(777001)
        tampered = good.replace("777001", "777002")
        expired = signed_init_data(777001, age=2 * 86400)
        for bad in (tampered, expired):
            browser.delete_all_cookies()
            stand_in = browser.execute_cdp_cmd(
                "Page.addScriptToEvaluateOnNewDocument",
                {
                    "source": "window.Telegram = {WebApp: {initData: "
                    + json.dumps(bad)
                    + ", ready: function () {}}};"
                },
            )
            browser.get(base + "/web/tg")
            WebDriverWait(browser, 15).until(lambda b: "Telegram" in b.find_element(By.ID, "status").text)
            assert "未能确认你的身份" in browser.find_element(By.ID, "status").text
            assert browser.current_url.endswith("/web/tg")
            browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", stand_in)
        browser.delete_all_cookies()
        browser.get(base + "/web/tg")  # outside Telegram: no initData, the page says how to get in
        WebDriverWait(browser, 15).until(lambda b: "/web" in b.find_element(By.ID, "status").text)
        assert browser.current_url.endswith("/web/tg")
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})


def test_screenshots_are_kept_outside_the_repository(shots: Path) -> None:
    names = sorted(p.name for p in shots.iterdir())
    assert len(names) == 12
    repo = Path(__file__).resolve().parents[2]
    assert not str(shots.resolve()).startswith(str(repo))
    if os.environ.get("YIBAO_KEEP_SCREENSHOTS"):
        shutil.copytree(shots, os.environ["YIBAO_KEEP_SCREENSHOTS"], dirs_exist_ok=True)
