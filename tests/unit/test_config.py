"""Configuration: ``bot.config.load_settings`` and ``yibao config check``."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.cli.main import main
from bot.config import ConfigError, Settings, load_settings, read_secret

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"

URL_PASSWORD = "Pw-7f3a9c-DoNotPrint"
TOKEN_SECRET = "TokenSecret-e81b4d-DoNotPrint"
PII_SECRET = "RG9Ob3RQcmludC10ZXN0LXBpaS1rZXktMzJieXRlcyE="  # base64 of a valid, distinctive 32-byte key
SECRETS = (URL_PASSWORD, TOKEN_SECRET, PII_SECRET)

BAD = f"""
[otp]
max_attempts = 99
code_ttl_seconds = 120
colour = "blue"

[sms]
gateway = "file"

[general]
timezone = "Mars/Olympus_Mons"

[redis]
url = "http://yibao:{URL_PASSWORD}@redis.example:6379/0"

[security]
pii_key = "{PII_SECRET}"

[telegram]
token = "{TOKEN_SECRET}"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No YIBAO_* variables and a working directory without a config.toml."""
    for name in list(os.environ):
        if name.startswith("YIBAO_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_defaults_without_file_or_environment() -> None:
    settings, path = load_settings()
    assert path is None
    assert settings.model_dump() == Settings().model_dump()
    assert settings.general.data_dir == Path(".yibao")
    assert settings.general.default_locale == "zh"
    assert settings.general.timezone == "Asia/Shanghai"
    assert settings.redis.url is None
    assert settings.redis.prefix == "yibao"
    assert settings.security.pii_key is None
    assert settings.otp.max_attempts == 5
    assert settings.otp.code_ttl_seconds == 300
    assert settings.sms.gateway == "console"
    assert [(p.name, p.kind) for p in settings.insurance.platforms] == [("sandbox", "sandbox")]
    assert settings.alerts.max_threshold == Decimal("50000")
    assert settings.logging.level == "INFO"
    assert settings.console.user == "local"
    assert settings.telegram.token is None


def test_which_file_is_read(tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write(tmp_path / "explicit.toml", '[console]\nuser = "explicit"\n')
    from_env = write(tmp_path / "from-env.toml", '[console]\nuser = "from-env"\n')
    local = write(clean_env / "config.toml", '[console]\nuser = "local-file"\n')

    settings, path = load_settings()
    assert (settings.console.user, path) == ("local-file", Path("config.toml"))

    monkeypatch.setenv("YIBAO_CONFIG", str(from_env))
    settings, path = load_settings()
    assert (settings.console.user, path) == ("from-env", from_env)

    settings, path = load_settings(explicit)
    assert (settings.console.user, path) == ("explicit", explicit)
    settings, path = load_settings(str(explicit))
    assert (settings.console.user, path) == ("explicit", explicit)

    local.unlink()
    monkeypatch.delenv("YIBAO_CONFIG")
    assert load_settings() == (Settings(), None)


def test_environment_beats_the_file_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path / "c.toml",
        '[otp]\nmax_attempts = 7\ncode_ttl_seconds = 120\n[console]\nuser = "from-file"\n',
    )
    monkeypatch.setenv("YIBAO_OTP__MAX_ATTEMPTS", "3")
    settings, _ = load_settings(path)
    assert settings.otp.max_attempts == 3
    assert settings.otp.code_ttl_seconds == 120  # the rest of [otp] still from the file
    assert settings.otp.lockout_seconds == 900  # and what neither sets keeps its default
    assert settings.console.user == "from-file"


def test_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YIBAO_ALERTS__MAX_THRESHOLD", "123.45")
    monkeypatch.setenv("YIBAO_GENERAL__DEFAULT_LOCALE", "en")
    settings, path = load_settings()
    assert path is None
    assert settings.alerts.max_threshold == Decimal("123.45")
    assert settings.general.default_locale == "en"


def test_a_bad_environment_value_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YIBAO_OTP__MAX_ATTEMPTS", "many")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert [p.key for p in caught.value.problems] == ["otp.max_attempts"]


def test_a_whole_section_in_the_environment_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YIBAO_REDIS", f"redis://:{URL_PASSWORD}@127.0.0.1:6379")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert_no_secret(str(caught.value))


def test_every_bad_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", BAD)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    error = caught.value
    assert error.path == path
    problems = {p.key: p.message for p in error.problems}
    assert set(problems) == {
        "otp.max_attempts",
        "otp.colour",
        "sms",
        "general.timezone",
        "redis.url",
        "telegram.token",
    }
    assert "10" in problems["otp.max_attempts"]
    assert "(got 99)" in problems["otp.max_attempts"]
    assert "unknown key" in problems["otp.colour"]
    assert "file_path" in problems["sms"]
    assert "Mars/Olympus_Mons" in problems["general.timezone"]
    assert "redis://" in problems["redis.url"]
    assert "BotFather" in problems["telegram.token"]
    for problem in error.problems:
        assert_no_secret(problem.message)
        assert_no_secret(problem.key)
    assert_no_secret(str(error))
    assert_no_secret(repr(error))


@pytest.mark.parametrize(
    "text",
    [
        f'[redis]\nurl = ["redis://:{URL_PASSWORD}@h"]\n',
        f'[redis]\nurl = "ftp://:{URL_PASSWORD}@h"\n',
        f'[telegram]\ntoken = "12:{TOKEN_SECRET}"\n',
        f"[telegram]\ntoken = {{ value = '{TOKEN_SECRET}' }}\n",
        f'[security]\npii_key = ["{PII_SECRET}"]\n',
        f'[security]\npii_key_secret = "{PII_SECRET}"\n',
        f'[redis]\nurl = "redis://:{URL_PASSWORD}@h"\nprefix = "Bad Prefix"\n',
        f'[telegram]\ntoken = "123:{TOKEN_SECRET}\n',  # a syntax error on the secret's line
    ],
)
def test_secrets_stay_out_of_problems(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems
    assert_no_secret(str(caught.value))


@pytest.mark.parametrize(
    "text", [f'redis = "redis://:{URL_PASSWORD}@h"\n', f'telegram = "123456:{TOKEN_SECRET}"\n']
)
def test_secrets_stay_out_of_problems_when_a_section_is_a_value(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert_no_secret(str(caught.value))


def test_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[otp]\nmax_attempts = = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert [p.key for p in caught.value.problems] == ["(syntax)"]
    assert "line 2" in caught.value.problems[0].message


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "nowhere.toml")
    assert [p.key for p in caught.value.problems] == ["(file)"]
    assert "nowhere.toml" in caught.value.problems[0].message
    # a folder is not a file either; nor is a $YIBAO_CONFIG that names nothing
    with pytest.raises(ConfigError):
        load_settings(tmp_path)
    monkeypatch.setenv("YIBAO_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert [p.key for p in caught.value.problems] == ["(file)"]


def test_secret_files_must_exist(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        f'[security]\npii_key_file = "{tmp_path / "no-key"}"\n[telegram]\ntoken_file = "{tmp_path / "no-token"}"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert [p.key for p in caught.value.problems] == ["security.pii_key_file", "telegram.token_file"]
    assert "no-key" in caught.value.problems[0].message


def test_read_secret(tmp_path: Path) -> None:
    key_file = write(tmp_path / "key", f"  {PII_SECRET}\n\n")
    path = write(tmp_path / "c.toml", f'[security]\npii_key_file = "{key_file}"\n')
    settings, _ = load_settings(path)
    secret = read_secret(settings.security.pii_key, settings.security.pii_key_file)
    assert isinstance(secret, SecretStr)
    assert secret.get_secret_value() == PII_SECRET
    assert PII_SECRET not in repr(settings)
    # given inline, the inline value wins over the file
    inline = read_secret(SecretStr("inline"), key_file)
    assert inline is not None
    assert inline.get_secret_value() == "inline"
    assert read_secret(None, None) is None


def test_an_empty_redis_url_means_embedded(tmp_path: Path) -> None:
    settings, _ = load_settings(write(tmp_path / "c.toml", '[redis]\nurl = ""\n'))
    assert settings.redis.url is None


def test_cli_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLE)]) == 0
    out = capsys.readouterr()
    assert f"{EXAMPLE}: OK" in out.out
    assert out.err == ""

    empty = write(tmp_path / "empty.toml", "")
    assert main(["config", "check", str(empty)]) == 0
    assert f"{empty}: OK" in capsys.readouterr().out

    assert main(["--config", str(empty), "config", "check"]) == 0
    assert f"{empty}: OK" in capsys.readouterr().out


def test_cli_check_ok_never_prints_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "c.toml",
        f'[redis]\nurl = "redis://:{URL_PASSWORD}@127.0.0.1:6379"\n'
        f'[security]\npii_key = "{PII_SECRET}"\n'
        f'[telegram]\ntoken = "123456:{TOKEN_SECRET}-abcdefghijk"\n',
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr()
    assert "redis: set" in out.out
    assert_no_secret(out.out + out.err)


def test_cli_check_needs_a_key_with_a_redis_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "c.toml", f'[redis]\nurl = "redis://:{URL_PASSWORD}@127.0.0.1:6379"\n')
    assert main(["config", "check", str(path)]) == 2
    out = capsys.readouterr()
    assert f"{path}: security.pii_key: required when redis.url is set" in out.err
    assert_no_secret(out.out + out.err)


def test_cli_check_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "bad.toml", BAD)
    assert main(["config", "check", str(path)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    keys = {"otp.max_attempts", "otp.colour", "sms", "general.timezone", "redis.url", "telegram.token"}
    assert len(lines) == len(keys)
    assert {line.split(": ", 2)[1] for line in lines} == keys
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert_no_secret(out.out + out.err)


def test_cli_check_missing_and_broken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["config", "check", str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"{missing}: (file): ")
    broken = write(tmp_path / "broken.toml", "[otp\n")
    assert main(["config", "check", str(broken)]) == 2
    assert capsys.readouterr().err.startswith(f"{broken}: (syntax): ")


def test_cli_check_uses_yibao_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "c.toml", "[otp]\nmax_attempts = 0\n")
    monkeypatch.setenv("YIBAO_CONFIG", str(path))
    assert main(["config", "check"]) == 2
    assert f"{path}: otp.max_attempts: " in capsys.readouterr().err


def test_a_malformed_pii_key_is_a_config_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad-key.toml"
    path.write_text('[security]\npii_key = "CHANGE-ME-not-base64-of-32-bytes"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    [problem] = caught.value.problems
    assert problem.key == "security.pii_key"
    assert "32 bytes" in problem.message or "base64" in problem.message
    assert "CHANGE-ME" not in problem.message


def test_the_wechat_section_is_checked_without_echoing_its_secrets(tmp_path: Path) -> None:
    aes_secret = "Aes-Secret-DoNotPrint-0123456789abcdefghijklm"  # 45 characters: not a key
    path = write(
        tmp_path / "wx.toml",
        f'[wechat]\napp_id = "wx0123456789abcdef"\ntoken = "ab"\nencoding_aes_key = "{aes_secret}"\n'
        'alert_field_note = "Thing"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    problems = {p.key: p.message for p in caught.value.problems}
    assert set(problems) == {"wechat.token", "wechat.encoding_aes_key", "wechat.alert_field_note"}
    assert "3 to 32" in problems["wechat.token"]
    assert "43 characters" in problems["wechat.encoding_aes_key"]
    assert aes_secret not in str(caught.value)


def test_a_wechat_app_needs_its_secret_and_token(tmp_path: Path) -> None:
    path = write(tmp_path / "wx.toml", '[wechat]\napp_id = "wx0123456789abcdef"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "app_secret" in str(caught.value)
    ok = write(
        tmp_path / "ok.toml",
        '[wechat]\napp_id = "wx0123456789abcdef"\napp_secret = "s"\ntoken = "yibao2026"\n'
        'encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"\n',
    )
    settings, _ = load_settings(ok)
    assert settings.wechat.encoding_aes_key is not None
    assert main(["config", "check", str(ok)]) == 0


def test_a_wecom_app_needs_all_its_keys_and_a_real_aes_key(tmp_path: Path) -> None:
    path = write(tmp_path / "wc.toml", '[wecom]\ncorp_id = "ww0123456789abcdef"\nagent_id = 1000002\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "wecom.secret" in message
    assert "wecom.token" in message
    assert "wecom.encoding_aes_key" in message
    bad = write(
        tmp_path / "bad.toml",
        '[wecom]\nencoding_aes_key = "too-short-DoNotPrint"\nmember_messages_per_minute = 31\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(bad)
    problems = {p.key for p in caught.value.problems}
    assert problems == {"wecom.encoding_aes_key", "wecom.member_messages_per_minute"}
    assert "DoNotPrint" not in str(caught.value)


def test_sentinel_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YIBAO_REDIS__SENTINELS", '["10.0.0.1:26379", "10.0.0.2:26379"]')
    monkeypatch.setenv("YIBAO_REDIS__SENTINEL_MASTER", "yibao")
    monkeypatch.setenv("YIBAO_REDIS__PASSWORD", URL_PASSWORD)
    settings, _ = load_settings()
    assert settings.redis.sentinels == ["10.0.0.1:26379", "10.0.0.2:26379"]
    assert settings.redis.external
    assert settings.redis.replicas_to_wait == 1  # writes that must survive a failover wait for one


@pytest.mark.parametrize(
    ("redis", "why"),
    [
        ({"sentinels": ["10.0.0.1:26379"]}, "sentinel_master is required"),
        ({"sentinels": ["10.0.0.1"], "sentinel_master": "m"}, "host:port"),
        ({"sentinels": ["10.0.0.1:26379"], "sentinel_master": "m", "url": "redis://h:1"}, "not both"),
        ({"cluster": True}, "needs url"),
    ],
)
def test_a_redis_topology_that_cannot_work_is_refused(redis: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Settings(redis=redis)  # type: ignore[arg-type]


def test_one_redis_waits_for_no_replica_unless_told() -> None:
    assert Settings(redis={"url": "redis://h:1"}).redis.replicas_to_wait == 0  # type: ignore[arg-type]
    cluster = Settings(redis={"url": "redis://h:1", "cluster": True})  # type: ignore[arg-type]
    assert cluster.redis.replicas_to_wait == 1
    told = Settings(redis={"url": "redis://h:1", "wait_replicas": 2})  # type: ignore[arg-type]
    assert told.redis.replicas_to_wait == 2
