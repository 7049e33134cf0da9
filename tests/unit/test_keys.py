"""Every Redis key: ``bot.storage.keys``."""

from __future__ import annotations

import re

import pytest

from bot.storage.keys import USER_KINDS, Keys, UserKind
from dialogs.models import UserKey

USER = UserKey("tg:123")


def test_key_format() -> None:
    assert Keys().user(USER, UserKind.SESSION) == "yibao:{tg:123}:session"
    assert Keys().user(UserKey("console:local"), UserKind.PROFILE) == "yibao:{console:local}:profile"


def test_one_hash_tag_per_user() -> None:
    keys = Keys().all_user(USER)
    tags = {re.search(r"\{([^}]*)\}", key).group(1) for key in keys}  # type: ignore[union-attr]
    assert tags == {"tg:123"}
    # Redis Cluster hashes only what is between the first '{' and the next '}'
    assert all(key.count("{") == 1 and key.count("}") == 1 for key in keys)
    assert Keys().all_user(UserKey("tg:124")) != keys


def test_custom_prefix() -> None:
    keys = Keys(prefix="acme")
    assert keys.user(USER, UserKind.OTP) == "acme:{tg:123}:otp"
    assert all(key.startswith("acme:") for key in keys.all_user(USER))
    assert keys.phone_sends("abc").startswith("acme:")
    assert keys.id_lookups("abc") == "acme:idnum:abc:lookups"


@pytest.mark.parametrize(
    "user",
    ["tg:1}", "tg:{1}", "no-colon", "tg:", ":1", "x" * 200, "tg:" + "1" * 65, "TG:1", "tg:1 2", ""],
)
def test_invalid_user_keys(user: str) -> None:
    for kind in USER_KINDS:
        with pytest.raises(ValueError, match="not a user key"):
            Keys().user(UserKey(user), kind)
    with pytest.raises(ValueError, match="not a user key"):
        Keys().all_user(UserKey(user))


def test_a_trailing_newline_is_not_a_user_key() -> None:
    with pytest.raises(ValueError, match="not a user key"):
        Keys().user(UserKey("tg:1\n"), UserKind.SESSION)


@pytest.mark.parametrize("user", ["tg:123", "console:local", "wx:o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "tg:-100123"])
def test_valid_user_keys(user: str) -> None:
    assert Keys().user(UserKey(user), UserKind.LOCK) == f"yibao:{{{user}}}:lock"


def test_all_user_covers_every_kind() -> None:
    keys = Keys().all_user(USER)
    assert keys == [f"yibao:{{tg:123}}:{kind.value}" for kind in UserKind]
    assert set(USER_KINDS) == set(UserKind)
    assert len(set(keys)) == len(UserKind)


def test_phone_sends_holds_no_phone_digits() -> None:
    digest = "9430e3fb601d0d32928c25651ba56207"
    key = Keys().phone_sends(digest)
    assert key == f"yibao:phone:{digest}:sends"
    assert "13812345678" not in key
    assert not re.search(r"1[3-9]\d{9}", key)
    # not a per-user key: no hash tag
    assert "{" not in key
