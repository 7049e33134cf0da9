"""Issue 12: the conversation as a new user meets it, one test per numbered finding, through the real
runtime (dialogs, Redis store, OTP service, the sandbox platform over its HTTP contract)."""

from __future__ import annotations

import logging
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import START, Harness, HarnessFactory, person

from bot.cli.main import main as yibao
from bot.crypto.pii import new_key_text
from dialogs.models import Binding, MemberId, Outcome, PlatformName, UserKey, UserState
from insurance.sandbox import DemoPerson, SandboxPlatform

ALICE = UserKey("console:alice")
MONEY = re.compile(r"¥([\d,]+\.\d\d)")
TWO_PLATFORMS = {
    "platforms": [
        {"name": "beijing", "label": "北京医保", "regions": ["11"]},
        {"name": "shanghai", "label": "上海医保", "regions": ["31"]},
    ]
}


def yuan(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def amounts(text: str) -> list[Decimal]:
    return [yuan(m) for m in MONEY.findall(text)]


async def threshold(harness: Harness, user: UserKey = ALICE) -> Decimal | None:
    return (await harness.runtime.store.peek(user)).profile.threshold


def in_code_step(harness: Harness) -> bool:
    """The reply carries the button for a new code, so a "1" typed next presses it."""
    return [b.payload for b in harness.last[-1].buttons] == ["/resend"]


# -- 1. capabilities follow the member ----------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "zh"])
async def test_1_a_member_without_a_personal_account_is_never_promised_an_alert(
    harness: Harness, locale: str
) -> None:
    resident, employee = person("resident"), person("normal")

    async def say(text: str, user: str = "console:alice") -> str:
        return await harness.say(text, user, locale=locale)

    # The employee is offered alerts (so the checks below can tell the two apart)...
    await say("/bind", "console:bob")
    await say(f"{employee.name} {employee.id_number}", "console:bob")
    done = await say(harness.last_code(), "console:bob")
    assert "/alert 100" in done

    # ...the resident is not, at binding or anywhere after.
    await say("/bind")
    await say(f"{resident.name} {resident.id_number}")
    done = await say(harness.last_code())
    assert ("bound" in done) or ("已绑定" in done)
    assert "/alert" not in done
    assert ("no personal account" in done) or ("没有个人账户" in done)
    for text in ("/start", "/help"):
        assert "/alert" not in await say(text)

    pooled = await harness.runtime.sandboxes["sandbox"].balance(resident.member_id)
    for text in ("/alert 100", "/alert", "低于100提醒我", "alert me below 100", "100元"):
        answer = await say(text)
        assert ("no personal account" in answer) or ("没有个人账户" in answer), (text, answer)
        assert "I'll tell you" not in answer
        assert "时我会提醒你" not in answer
        assert f"¥{pooled.pooled_remaining:,.2f}" in answer  # what it can tell instead
        assert harness.last[-1].buttons == ()
        assert await threshold(harness) is None

    caption = await say("/chart")
    assert harness.last[0].attachment is not None
    assert ("You have no personal account" in caption) or ("你没有个人账户" in caption)


async def test_1_an_alert_set_before_is_removed_for_a_member_without_a_personal_account(
    harness: Harness,
) -> None:
    await harness.bind(person("resident"))

    async def old_threshold(state: UserState) -> Outcome:
        return Outcome(replies=(), session=state.session, set_threshold=Decimal("100"))

    await harness.runtime.store.update(ALICE, old_threshold)
    answer = await harness.say("/alert")
    assert "I removed the alert at ¥100.00" in answer
    assert await threshold(harness) is None


# -- 2. breakdowns add up ---------------------------------------------------------------------


def periods(today: date) -> dict[str, tuple[date, date]]:
    """The periods the intents understand, as [first day, day after), worked out here by hand."""
    this_month = today.replace(day=1)
    last_month = date(this_month.year - (this_month.month == 1), (this_month.month - 2) % 12 + 1, 1)
    next_month = date(this_month.year + (this_month.month == 12), this_month.month % 12 + 1, 1)
    return {
        "这个月": (this_month, next_month),
        "上个月": (last_month, this_month),
        "今年": (date(today.year, 1, 1), date(today.year + 1, 1, 1)),
        "去年": (date(today.year - 1, 1, 1), date(today.year, 1, 1)),
    }


FUNDS = {"": None, "统筹": "pooled", "个人账户": "personal"}
CATEGORIES = {"药店": "pharmacy", "门诊": "outpatient", "住院": "inpatient"}


async def all_transactions(
    sandbox: SandboxPlatform, who: DemoPerson
) -> list[tuple[datetime, str, Decimal, Decimal]]:
    page = await sandbox.transactions(who.member_id, limit=100)
    items = list(page.items)
    while page.next_cursor:
        page = await sandbox.transactions(who.member_id, limit=100, cursor=page.next_cursor)
        items += page.items
    return [
        (t.at, t.category.value, -t.personal_amount, -t.pooled_amount)
        for t in items
        if t.category.value != "credit"
    ]


async def test_2_every_breakdown_adds_up_to_the_figure_it_explains(harness: Harness) -> None:
    """For every sandbox person and every period and fund the intents understand: the figure and
    its breakdown are both computed here from the sandbox's own transactions, and both must match."""
    sandbox = harness.runtime.sandboxes["sandbox"]
    tz = START.tzinfo
    checked = 0
    for who in SandboxPlatform.from_file().people():
        user = UserKey(f"console:{who.member_id}")
        binding = Binding(
            member_id=MemberId(who.member_id),
            platform=PlatformName("sandbox"),
            id_number=who.id_number,  # type: ignore[arg-type]
            phone=who.phone,  # type: ignore[arg-type]
            bound_at=START,
        )

        async def bind(state: UserState, binding: Binding = binding) -> Outcome:
            return Outcome(replies=(), session=state.session, set_binding=binding)

        await harness.runtime.store.update(user, bind)
        try:
            spent = await all_transactions(sandbox, who)
        except Exception:  # locked or in maintenance: the bot must say so, with no figure
            spent = None
        for word, (first, after) in periods(START.date()).items():
            for fund_word, fund in FUNDS.items():
                answer = await harness.say(f"{word}{fund_word}花了多少", str(user), locale="zh")
                if spent is None:
                    assert "¥" not in answer, answer
                    continue
                inside = [t for t in spent if first <= t[0].astimezone(tz).date() < after]
                if not inside:
                    assert "没有医疗消费" in answer, answer
                    continue
                paid = [
                    (
                        cat,
                        personal if fund == "personal" else pooled if fund == "pooled" else personal + pooled,
                    )
                    for _, cat, personal, pooled in inside
                ]
                paid = [(cat, amount) for cat, amount in paid if amount != 0]
                expected = sum((a for _, a in paid), Decimal(0))
                head, _, tail = answer.partition("\n")
                if not paid:
                    assert "¥" not in answer, answer
                    assert "没有" in answer, answer
                    continue
                assert amounts(head)[0] == expected, (who.name, word, fund_word, answer)
                if fund is None:
                    personal = sum((t[2] for t in inside), Decimal(0))
                    pooled = sum((t[3] for t in inside), Decimal(0))
                    assert amounts(head)[1:] == [personal, pooled], answer
                by_category = {
                    CATEGORIES[name]: yuan(amount)
                    for name, amount in re.findall(r"(药店|门诊|住院) ¥([\d,]+\.\d\d)", tail)
                }
                expected_by_category: dict[str, Decimal] = {}
                for cat, amount in paid:
                    expected_by_category[cat] = expected_by_category.get(cat, Decimal(0)) + amount
                assert by_category == expected_by_category, (who.name, word, fund_word, answer)
                assert sum(by_category.values(), Decimal(0)) == amounts(head)[0]
                assert f"（共 {len(paid)} 笔）" in tail, answer
                checked += 1
    assert checked > 100  # the figures were really compared, not skipped


# -- 3. names, and a warning before the lockout ---------------------------------------------


async def test_3_names_in_chinese_characters_and_a_warning_before_the_last_try(harness: Harness) -> None:
    who = person("normal")
    asked = await harness.say("/bind")
    assert "in Chinese characters" in asked
    assert "middle dot ·" in asked
    for latin in ("Zhang Wei", "zhang wei", "ZHANG WEI"):  # answered before any lookup
        answer = await harness.say(latin)
        assert "Chinese characters" in answer
        assert "not Zhang Wei" in answer
        assert "Step 1 of 3" in answer
    assert await harness.runtime.otp.locked_until(ALICE) is None

    await harness.say("章伟")
    first = await harness.say(who.id_number)
    assert "name does not match" in first
    assert "Careful" not in first  # two attempts are left: no warning yet
    await harness.say("章伟")
    second = await harness.say(who.id_number)
    assert "Careful: one more failed attempt pauses binding for 15 minutes." in second
    assert "Step 1 of 3" in second
    await harness.say("章伟")
    assert "binding is paused until 10:15" in await harness.say(who.id_number)


async def test_3_the_warning_in_chinese_and_at_the_code_step(make_harness: HarnessFactory) -> None:
    harness = await make_harness(otp={"lockout_after_failures": 2, "max_attempts": 2})
    who = person("normal")
    await harness.say("/bind", locale="zh")
    await harness.say("章伟", locale="zh")
    assert "再失败一次，绑定将暂停 15 分钟" in await harness.say(who.id_number, locale="zh")
    await harness.say(f"{who.name} {who.id_number}", locale="zh")
    code = harness.last_code()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    last_try = await harness.say(wrong, locale="zh")  # one try left on the code, one failure left
    assert "还可以再试 1 次" in last_try
    assert "再失败一次，绑定将暂停 15 分钟" in last_try
    assert "/resend" in last_try


async def test_3_name_and_id_number_in_one_message(harness: Harness) -> None:
    who = person("normal", 1)  # 周婷
    await harness.say("/bind")
    assert "Step 3 of 3" in await harness.say(f"{who.name} {who.id_number}")
    assert harness.last[0].sensitive_input  # it held the ID number
    assert "bound" in await harness.say(harness.last_code())


# -- 4. commands in the middle of a flow -----------------------------------------------------


async def test_4_commands_in_the_middle_of_binding_restate_the_step(harness: Harness) -> None:
    who = person("normal")
    await harness.say("/bind")
    await harness.say(who.name)
    start = await harness.say("/start")
    assert "binding is in progress, at Step 2 of 3" in start
    assert "not bound yet. Send /bind" not in start
    assert harness.last[-1].text.startswith("Step 2 of 3: your 18-character")
    for command in ("/balance", "/history", "/alert 100", "/chart"):
        answer = await harness.say(command)
        assert f"so {command.split()[0]} has to wait until it is done" in answer
        assert "Step 2 of 3: your 18-character" in answer
    assert "Step 2 of 3" in await harness.say("/help")
    assert "第 2 步（共 3 步）" in await harness.say("/lang zh")  # restated in the new language
    await harness.say("/lang en")
    await harness.say(who.id_number)
    held = await harness.say("/balance")
    assert "Step 3 of 3: the 6-digit code I sent by SMS to" in held
    assert in_code_step(harness)
    assert "bound" in await harness.say(harness.last_code())  # the flow went on


# -- 5. fixing a typo ------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "zh"])
async def test_5_the_name_can_be_corrected_at_the_id_step(harness: Harness, locale: str) -> None:
    who = person("normal", 1)  # 周婷
    await harness.say("/bind", locale=locale)
    await harness.say("周亭", locale=locale)  # a typo
    corrected = await harness.say(who.name, locale=locale)  # the name again, at step 2
    assert "位" not in corrected.replace("18 位居民身份证号", "")
    assert "you sent 2" not in corrected
    assert ("OK, I'll use the name 周婷." in corrected) or ("姓名已更正为 周婷" in corrected)
    assert "Step 3 of 3" in (await harness.say(who.id_number, locale=locale)).replace(
        "第 3 步（共 3 步）", "Step 3 of 3"
    )


async def test_5_name_and_id_number_at_the_id_step_replace_the_name(harness: Harness) -> None:
    who = person("normal", 1)
    await harness.say("/bind")
    await harness.say("王五")
    assert "Step 3 of 3" in await harness.say(f"{who.name} {who.id_number}")  # 周婷 found, not 王五
    assert "bound" in await harness.say(harness.last_code())


async def test_5_words_at_the_id_step_are_not_counted_in_digits(harness: Harness) -> None:
    await harness.say("/bind", locale="zh")
    await harness.say("周婷", locale="zh")
    answer = await harness.say("周婷123", locale="zh")
    assert "身份证号由 17 位数字加 1 位数字或字母 X 组成" in answer
    assert "你发送的是" not in answer


# -- 6. input that is no candidate costs nothing ---------------------------------------------


async def test_6_a_malformed_code_costs_no_try(harness: Harness) -> None:
    await harness.start_bind(person("normal"))
    code = harness.last_code()
    for typo in ("12345", "1234567", "12a456", "1", "一二三四五六"):
        answer = await harness.say(typo)
        assert "did not count as a try" in answer, (typo, answer)
        assert "Step 3 of 3" in answer
        assert in_code_step(harness)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert "4 tries left" in await harness.say(wrong)  # the first real try
    assert "bound" in await harness.say(code)


async def test_6_ids_of_the_wrong_length_cost_no_attempt(make_harness: HarnessFactory) -> None:
    harness = await make_harness(otp={"lockout_after_failures": 1})
    who = person("normal")
    await harness.say("/bind")
    await harness.say(who.name)
    for bad in ("1101011983121169", "11010119831211693999", "11010119831211693Y", "hello"):
        assert "Step 2 of 3" in await harness.say(bad)
    assert "Step 3 of 3" in await harness.say(who.id_number)  # one failure would have locked


# -- 7. a platform that left the config -----------------------------------------------------


async def test_7_a_binding_to_a_platform_no_longer_configured(
    make_harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key_text()
    before = await make_harness(insurance=TWO_PLATFORMS, security={"pii_key": key})
    who = person("normal")  # Beijing: the beijing platform
    assert "Step 3 of 4" in await before.start_bind(who)
    assert "Step 4 of 4" in await before.say("1")  # beijing, proposed first for a Beijing ID number
    assert "bound" in await before.say(before.last_code())
    after = await make_harness(
        insurance={"platforms": [{"name": "shanghai", "label": "上海医保", "regions": ["31"]}]},
        security={"pii_key": key},
    )
    after.clock.advance(120)  # past the cached balance
    caplog.set_level(logging.WARNING, logger="bot.insurers.registry")
    for question in ("/history", "/balance", "上个月花了多少", "/chart", "/alert 100"):
        answer = await after.say(question)
        assert 'bound on the insurance platform "beijing"' in answer, (question, answer)
        assert "Send /bind to bind again" in answer
        assert "¥" not in answer
    zh = await after.say("/history", locale="zh")
    assert "请发送 /bind 重新绑定" in zh
    gone = [r for r in caplog.records if "beijing" in r.getMessage()]
    assert len(gone) == 1  # once, naming the platform
    assert gone[0].levelno == logging.WARNING
    assert "Step 1 of" in await after.say("/bind")  # no "/unbind first"


# -- 8. the smaller ones ----------------------------------------------------------------------


async def test_8_resend_when_already_bound(harness: Harness) -> None:
    await harness.bind(person("normal"))
    answer = await harness.say("/resend")
    assert "already bound" in answer
    assert "/bind" not in answer


async def test_8_the_platform_choice_says_how_to_answer_and_counts_its_step(
    make_harness: HarnessFactory,
) -> None:
    harness = await make_harness(insurance=TWO_PLATFORMS)
    who = person("low_balance")
    assert "Step 1 of 4" in await harness.say("/bind")
    assert "Step 2 of 4" in await harness.say(who.name)
    assert "Step 3 of 4" in await harness.say(who.id_number)
    for answer in ("3", "广州", "0"):
        reply = await harness.say(answer)
        assert f'"{answer}" is not one of the choices' in reply
        assert "Reply with a number from 1 to 2, or press a button" in reply
        assert len(harness.last[0].buttons) == 2
    again = await harness.say(who.id_number)  # the ID number once more: not echoed, and deleted
    assert who.id_number not in again
    assert "not one of the choices" in again
    assert harness.last[0].sensitive_input
    assert "Step 4 of 4" in await harness.say("上海")  # a part of one label
    state = await harness.runtime.store.peek(ALICE)
    assert state.session.pending is not None
    assert state.session.pending.platform == "shanghai"
    zh = await harness.say("/balance", locale="zh")
    assert "第 4 步（共 4 步）" in zh


async def test_8_every_answer_at_the_code_step_offers_a_new_code(harness: Harness) -> None:
    await harness.start_bind(person("normal"))
    code = harness.last_code()
    for text in ("1", f"{(int(code) + 1) % 1_000_000:06d}", "/resend", "/balance"):
        await harness.say(text)
        assert in_code_step(harness), text


async def test_8_chart_files_are_per_request(harness: Harness) -> None:
    await harness.bind(person("normal"))
    await harness.say("/chart")
    first = harness.last[0].attachment
    harness.clock.advance(1)
    await harness.say("/chart", locale="zh")
    second = harness.last[0].attachment
    assert first is not None
    assert second is not None
    assert first.filename != second.filename


async def test_8_chinese_history_and_totals_have_no_stray_spaces_or_half_width_brackets(
    harness: Harness,
) -> None:
    await harness.bind(person("normal"))
    history = await harness.say("/history 50", locale="zh")
    assert "其中个人账户" in history
    assert "其中 " not in history
    spent = await harness.say("今年花了多少", locale="zh")
    assert re.search(r"（共 \d+ 笔）", spent)
    assert "(" not in spent


async def test_8_the_chart_of_a_syncing_account_says_last_known(harness: Harness) -> None:
    await harness.bind(person("syncing"))
    caption = await harness.say("/chart")
    assert harness.last[0].attachment is not None
    assert "still syncing: these are the last known figures, from" in caption


# -- 9. README against the program ------------------------------------------------------------


async def test_9_a_bare_amount_offers_the_alert_it_may_mean(harness: Harness) -> None:
    await harness.bind(person("low_balance"))
    for text in ("100元", "¥88.5", "30块"):
        answer = await harness.say(text)
        assert "Do you want me to tell you when your personal account drops below" in answer
        assert await threshold(harness) is None  # never set unasked
    assert [b.payload for b in harness.last[0].buttons] == ["/alert 30"]
    assert "¥30.00" in await harness.say("/alert 30")  # the button
    assert await threshold(harness) == Decimal("30.00")


def test_9_config_check_with_redis_and_no_key_says_only_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\n', encoding="utf-8")
    assert yibao(["config", "check", str(path)]) == 2
    out = capsys.readouterr()
    assert "OK" not in out.out
    assert "demo key" not in out.out
    assert "security.pii_key: required when redis.url is set" in out.err


def test_9_the_readme_says_the_demo_sms_limit() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert "YIBAO_OTP__MAX_PER_HOUR_PER_USER" in readme
    assert "five binds" in readme or "5 codes an hour" in readme


async def test_9_the_sixth_code_in_an_hour_is_refused_with_its_time(harness: Harness) -> None:
    """What the README's demo note describes: five codes an hour, then the time of the next."""
    for i in range(5):
        await harness.say("/cancel")
        harness.clock.advance(60)
        assert "Step 3 of 3" in await harness.start_bind(person("normal", i % 2))
    harness.clock.advance(60)
    await harness.say("/cancel")
    refused = await harness.start_bind(person("normal", 2))
    assert "Too many codes" in refused
    assert "11:01" in refused  # an hour after the first of the five
