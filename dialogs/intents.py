"""What a message asks for: a command, or a free-text question in Chinese or English."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arg: str


class Intent(StrEnum):
    BALANCE = "balance"
    SPENDING = "spending"
    HISTORY = "history"
    CHART = "chart"
    ALERT = "alert"
    BIND = "bind"
    HELP = "help"
    GREETING = "greeting"
    INSTITUTIONS = "institutions"
    """Designated hospitals or pharmacies; ``arg`` is ``hospital``, ``pharmacy`` or empty (both)."""
    DRUG = "drug"
    """Whether a drug is on the list; ``arg`` is its name."""
    VOUCHER = "voucher"
    CONTRIBUTIONS = "contributions"
    FAMILY = "family"
    AMOUNT = "amount"
    """A bare sum of money ("100元", "¥88.5"): perhaps an alert amount, never set unasked."""
    UNKNOWN = "unknown"


class Period(StrEnum):
    THIS_MONTH = "this_month"
    LAST_MONTH = "last_month"
    THIS_YEAR = "this_year"
    LAST_YEAR = "last_year"


class Fund(StrEnum):
    ALL = "all"
    PERSONAL = "personal"
    POOLED = "pooled"


@dataclass(frozen=True, slots=True)
class Understood:
    intent: Intent
    arg: str = ""
    period: Period = Period.THIS_MONTH
    fund: Fund = Fund.ALL


_COMMAND = re.compile(r"^/(?P<name>[A-Za-z_]+)(?:@\w+)?(?:\s+(?P<arg>.*))?$", re.DOTALL)

_AMOUNT = r"(?P<amt>[-+]?\s*(?:¥|rmb|cny)?\s*[-+]?[0-9A-Za-z.,+-]+\s*(?:元|块钱|块|yuan|rmb|cny)?)"
_ALERT = [
    re.compile(
        rf"(?:低于|少于|小于|不足|不到|跌破|below|under|less than)\s*{_AMOUNT}\s*(?:时|的时候)?.*(?:提醒|通知|告诉|alert|remind|notify|tell)",
        re.I,
    ),
    re.compile(
        rf"(?:提醒|通知|告诉|alert|remind|notify|tell)\s*(?:我|me)?.*?(?:低于|少于|小于|不足|不到|跌破|below|under|less than)\s*{_AMOUNT}\s*$",
        re.I,
    ),
]
_BARE_AMOUNT = re.compile(
    r"^(?P<amt>(?:¥|rmb|cny)\s*\d[\d,]*(?:\.\d+)?|\d[\d,]*(?:\.\d+)?\s*(?:元|块钱|块|yuan|rmb|cny))[。.!！]?$",
    re.I,
)
_BALANCE = re.compile(
    r"余额|还剩|剩多少|剩下多少|剩余多少|有多少钱|多少钱|还有多少|查.*医保|医保.*(?:多少|查)|"
    r"\bbalance\b|how much.*\b(?:left|have|remain)|what'?s left|\bremaining\b",
    re.I,
)
_SPENT = re.compile(
    r"花了|花费|消费了?多少|用了|用掉|支出|开销|报销了?多少|\bspen[dt]\b|\bused\b|\bpaid\b", re.I
)
_PERIODS = (
    (Period.LAST_MONTH, re.compile(r"上个?月|last month", re.I)),
    (Period.THIS_MONTH, re.compile(r"这个?月|本月|this month", re.I)),
    (Period.LAST_YEAR, re.compile(r"去年|上一?年|last year", re.I)),
    (Period.THIS_YEAR, re.compile(r"今年|本年|年度|this year", re.I)),
)
_POOLED = re.compile(r"统筹|pooled", re.I)
_PERSONAL = re.compile(r"个人账户|personal", re.I)
_HISTORY = re.compile(r"交易记录|消费记录|明细|流水|最近的?(?:交易|消费)|\bhistory\b|\btransactions?\b", re.I)
_CHART = re.compile(r"图表|趋势|走势|\bchart\b|\bgraph\b|\btrend\b", re.I)
_CREDIT = re.compile(
    r"划入|划拨|入账|到账|缴费(?:记录|基数|情况)?|社保交了|contributions?\b|credit(?:ed)?\b", re.I
)
_PHARMACY = re.compile(r"药店|药房|pharmac", re.I)
_INSTITUTION = re.compile(r"定点|附近的?(?:医院|药店|药房)|医院|hospital|clinic|pharmac", re.I)
_VOUCHER = re.compile(r"电子凭证|医保码|电子医保卡|付款码|e-?voucher|\bvoucher\b|insurance (?:qr|code)", re.I)
_FAMILY = re.compile(r"家庭共济|共济|家人|家属|family", re.I)
_DRUG = re.compile(
    r"^(?P<name>[\u4e00-\u9fffA-Za-z0-9·]{2,20}?)(?:能|可以|可不可以|能不能)?(?:报销|走医保|用医保)(?:吗|么|嘛)?[?？。]?$"
    r"|^(?:is|can)\s+(?P<en>[A-Za-z ]{3,30}?)\s+(?:covered|reimbursed)\??$",
    re.I,
)
_BIND = re.compile(r"^(?:绑定|绑定医保|我要绑定|bind|link)(?:账户|账号| my account| account)?$", re.I)
_HELP = re.compile(r"^(?:帮助|怎么用|help|\?|？|菜单|menu)$", re.I)
_GREETING = re.compile(r"^(?:你好|您好|嗨|哈喽|hi|hello|hey|在吗)[!！。.~ ]*$", re.I)


def normalize(text: str) -> str:
    """NFKC (full-width digits and letters become ASCII), trimmed, inner whitespace folded."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def parse_command(text: str) -> Command | None:
    m = _COMMAND.match(text)
    if m is None:
        return None
    return Command(m["name"].lower(), (m["arg"] or "").strip())


def understand(text: str) -> Understood:
    """Free text (already ``normalize``d) to an intent. Alerts first: "余额低于100提醒我" is an alert."""
    for pattern in _ALERT:
        m = pattern.search(text)
        if m:
            return Understood(Intent.ALERT, m["amt"].strip())
    bare = _BARE_AMOUNT.match(text)
    if bare:
        return Understood(Intent.AMOUNT, bare["amt"])
    if _CREDIT.search(text):
        return Understood(Intent.CONTRIBUTIONS)
    drug = _DRUG.match(text)
    if drug and not _INSTITUTION.search(text):
        return Understood(Intent.DRUG, (drug["name"] or drug["en"] or "").strip())
    if _VOUCHER.search(text):
        return Understood(Intent.VOUCHER)
    if _FAMILY.search(text):
        return Understood(Intent.FAMILY)
    if _INSTITUTION.search(text):
        kind = (
            "pharmacy"
            if _PHARMACY.search(text)
            else "hospital"
            if re.search(r"医院|hospital|clinic", text, re.I)
            else ""
        )
        return Understood(Intent.INSTITUTIONS, kind)
    if _SPENT.search(text):
        period = next((p for p, pattern in _PERIODS if pattern.search(text)), Period.THIS_MONTH)
        fund = Fund.POOLED if _POOLED.search(text) else Fund.PERSONAL if _PERSONAL.search(text) else Fund.ALL
        return Understood(Intent.SPENDING, period=period, fund=fund)
    if _HISTORY.search(text):
        return Understood(Intent.HISTORY)
    if _CHART.search(text):
        return Understood(Intent.CHART)
    if _BIND.match(text):
        return Understood(Intent.BIND)
    if _HELP.match(text):
        return Understood(Intent.HELP)
    if _GREETING.match(text):
        return Understood(Intent.GREETING)
    if _BALANCE.search(text):
        return Understood(Intent.BALANCE)
    return Understood(Intent.UNKNOWN)
