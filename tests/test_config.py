"""Config file: Asterisk INI syntax, env overrides, every problem reported, secrets hidden."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from callback_ari.config import docs, settings
from callback_ari.config.loader import (
    AgiConfig,
    AmiConfig,
    AriConfig,
    Config,
    GeneralConfig,
    HttpConfig,
    Prompts,
    QueueConfig,
    RedisConfig,
    load_config,
    parse_config,
)
from callback_ari.config.settings import QUEUE_SCHEMA, SCHEMA
from callback_ari.core.prompts import PROMPT_NAMES
from callback_ari.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "dialplan" / "callback_ari.conf"

MINIMAL = """
[ari]
password = ari-secret-1
[ami]
secret = ami-secret-2
[queue:support]
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env or {})
    return [str(p) for p in info.value.problems]


# --- the shipped example -----------------------------------------------------------


def test_shipped_example_loads_and_documents_the_defaults() -> None:
    config = load_config(EXAMPLE, env={})
    secret = "change-me-to-a-long-random-secret"
    assert config.ari == AriConfig(password=secret)
    assert config.ami == AmiConfig(secret=secret)
    assert config.redis == RedisConfig()
    assert config.http == HttpConfig()
    assert config.agi == AgiConfig()
    general = dataclasses.replace(config.general, instance_id="x")
    assert general == GeneralConfig(instance_id="x")
    # every value written in the example is the documented default
    assert dict(config.queues) == {"support": QueueConfig(name="support")}


def test_shipped_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"{key} =" in text, f"[{section}] {key} is not documented"
    for key in QUEUE_SCHEMA:
        assert f"\n{key} =" in text or f";{key} =" in text, f"queue key {key} undocumented"


def test_readme_reference_and_example_config_are_generated_from_the_declarations() -> None:
    """Edit callback_ari/config/settings.py, then run python -m callback_ari.config.docs --write."""
    readme = docs.README.read_text(encoding="utf-8")
    assert docs.readme_with_reference(readme) == readme, "README reference is stale"
    assert docs.example_config() == EXAMPLE.read_text(encoding="utf-8"), "example is stale"
    assert docs.main(["--check"]) == 0


def test_every_declared_default_is_in_the_generated_reference() -> None:
    tables, example = docs.reference_tables(), docs.example_config()
    q = QueueConfig(name="q")
    for key, (_, doc) in settings.declared(QueueConfig).items():
        if doc.shown_default or doc.placeholder:
            continue
        written = docs.render_value(getattr(q, key))
        assert f"\n{key} = {written}".rstrip() in example, key
        assert f"| `{key}` | {f'`{written}`' if written else 'empty'} |" in tables, key


def test_prompt_names_are_one_list() -> None:
    assert tuple(Prompts().as_mapping()) == PROMPT_NAMES
    assert {k.removeprefix("prompt_") for k in QUEUE_SCHEMA if k.startswith("prompt_")} == set(
        PROMPT_NAMES
    )
    with pytest.raises(ValueError, match="unknown prompts: nope"):
        Prompts({"nope": ()})


def test_default_prompts_are_the_offer_dialogue_defaults() -> None:
    from callback_ari.core.prompts import DEFAULT_PROMPTS

    assert Prompts().as_mapping() == dict(DEFAULT_PROMPTS)


def test_prompts_can_be_replaced_or_silenced() -> None:
    text = MINIMAL + "prompt_offer = recording:cb-offer, tone:ring\nprompt_goodbye =\n"
    text += "prompt_stored = sound:custom/cb-stored\nprompt_stored = digits:42\n"
    prompts = parse_config(text, {}).queues["support"].prompts
    assert prompts["offer"] == ("recording:cb-offer", "tone:ring")
    assert prompts["goodbye"] == ()
    assert prompts["stored"] == ("sound:custom/cb-stored", "digits:42")
    assert prompts.as_mapping()["offer"] == prompts["offer"]
    assert prompts.all_uris().count("sound:queue-thankyou") == 1
    assert "sound:custom/cb-stored" in prompts.all_uris()


# --- syntax ------------------------------------------------------------------------


def test_asterisk_syntax_arrows_comments_and_case() -> None:
    text = """
# a hash comment line
[General]
LOG_LEVEL => debug            ; inline comment
[ari]
Password = semi\\;colon#hash  ; escaped semicolon is kept
;-- a block comment
[bogus]
nonsense
--;
[ami]
secret => s
[Queue:Support]
Max_Attempts => 5
allow_patterns = _NXXNXXXXXX
allow_patterns = _1NXXNXXXXXX, 4711
"""
    config = parse_config(text, {})
    assert config.general.log_level == "debug"
    assert config.ari.password == "semi;colon#hash"
    q = config.queues["Support"]
    assert q.max_attempts == 5
    assert q.allow_patterns == ("_NXXNXXXXXX", "_1NXXNXXXXXX", "4711")


def test_five_mistakes_are_all_reported() -> None:
    text = """
[general]
colour = blue
[ari]
password = p
[ami]
secret = s
[queue:support]
max_attempts = 0
dial_template = PJSIP/{num}@trunk
timezone = Mars/Olympus_Mons
prompt_offer = sound:ok, http://evil/x.wav
[paging]
"""
    assert problems(text) == [
        "[paging]: unknown section (expected general, ari, ami, redis, http, agi or queue:NAME)",
        "[general] colour: unknown key (line 3)",
        "[queue:support] max_attempts: must be >= 1, got '0'",
        "[queue:support] dial_template: unknown placeholder {num}, got 'PJSIP/{num}@trunk'",
        "[queue:support] timezone: unknown time zone 'Mars/Olympus_Mons', got 'Mars/Olympus_Mons'",
        "[queue:support] prompt_offer: bad media URI 'http://evil/x.wav': use sound:NAME, "
        "recording:NAME, digits:N, number:N or tone:T, got 'sound:ok, http://evil/x.wav'",
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("hours = mon-fri 8-18", "[queue:q] hours: bad time range '8-18'"),
        ("hours = funday 08:00-09:00", "[queue:q] hours: unknown day 'funday'"),
        ("region = XX", "[queue:q] region: must be a two-letter region code"),
        ("dial_template = PJSIP/trunk", "[queue:q] dial_template: must contain {number} or {e164}"),
        ("dial_template = PJSIP/{number}&DAHDI/1", "[queue:q] dial_template: may only contain"),
        ("deny_patterns = _X.X", "[queue:q] deny_patterns: '.' must be the last character"),
        ("allow_patterns = _[12", "[queue:q] allow_patterns: unclosed '['"),
        ("ring_timeout = soon", "[queue:q] ring_timeout: must be a whole number, got 'soon'"),
        ("withdraw = maybe", "[queue:q] withdraw: must be yes or no, got 'maybe'"),
        ("after_hours = drop", "[queue:q] after_hours: must be one of carry_over, expire"),
        ("request_digit = 12", "[queue:q] request_digit: must be one DTMF digit"),
        (
            "max_attempts = 3\nmax_attempts = 4",
            "[queue:q] max_attempts: set twice (line 6 and line 7)",
        ),
    ],
)
def test_queue_value_problems(line: str, expected: str) -> None:
    text = f"[ari]\npassword = p\n[ami]\nsecret = s\n[queue:q]\n{line}\n"
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected)


def test_hours_are_checked_even_when_the_time_zone_is_bad() -> None:
    text = MINIMAL + "timezone = Nowhere/City\nhours = mon 09:00-25:00\n"
    found = problems(text)
    assert [p.split(":")[0] for p in found] == ["[queue", "[queue"]
    assert any(p.startswith("[queue:support] timezone: unknown time zone") for p in found)
    assert any(p.startswith("[queue:support] hours: bad time in '09:00-25:00'") for p in found)


def test_missing_password_secret_and_queue_are_required() -> None:
    assert problems("[general]\n") == [
        "[ari] password: is required (set it here or in $CALLBACK_ARI_ARI_PASSWORD)",
        "[ami] secret: is required (set it here or in $CALLBACK_ARI_AMI_SECRET)",
        "[queue:NAME]: at least one [queue:NAME] section is required",
    ]


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.conf", env={})
    (problem,) = info.value.problems
    missing = tmp_path / "nope.conf"
    assert str(problem) == (
        f"[file] {missing}: does not exist; start from the example: "
        f"callback-ari config sample > {missing}"
    )


def test_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.conf"
    folder.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(folder, env={})
    assert str(info.value.problems[0]) == f"[file] {folder}: cannot read: Is a directory"


def test_ari_url_must_be_the_base_without_credentials() -> None:
    text = MINIMAL + "[ari]\nurl = http://u:pw@host:8088/ari\n"
    (found,) = problems(text)
    assert found.startswith("[ari] url: must not contain credentials")
    (found,) = problems(MINIMAL + "[ari]\nurl = http://host:8088/ari\n")
    assert found.startswith("[ari] url: must be the HTTP base without /ari")


def test_sentinel_settings_go_together() -> None:
    assert problems(MINIMAL + "[redis]\nsentinel_master = mymaster\n") == [
        "[redis] sentinels: required when sentinel_master is set"
    ]
    config = parse_config(
        MINIMAL + "[redis]\nsentinel_master = m\nsentinels = a:26379, b:26379\n", {}
    )
    assert config.redis.sentinels == ("a:26379", "b:26379")


def test_queue_names_are_case_insensitive_and_unique() -> None:
    found = problems(MINIMAL + "[queue:SUPPORT]\n[queue:bad name]\n")
    assert found == [
        "[queue:SUPPORT]: same queue as [queue:support] (queue names ignore case)",
        "[queue:bad name]: queue name must be letters, digits, '_', '.', '+' or '-'",
    ]


# --- secrets -----------------------------------------------------------------------


def test_secrets_never_appear_in_problems() -> None:
    text = """
[ari]
password = hunter2\x07bell
[ami]
secret = s
[redis]
url = redis://:topsecretpw@localhost:notaport/0
[queue:q]
"""
    found = problems(text, {"CALLBACK_ARI_HTTP_TOKEN": "zzsecret\x01zz"})
    joined = "\n".join(found)
    assert "hunter2" not in joined and "topsecretpw" not in joined and "zzsecret" not in joined
    assert "[ari] password: must not contain control characters, got '***'" in found
    assert "[redis] url: has an invalid port, got 'redis://:***@localhost:notaport/0'" in found
    assert any(f.startswith("[http] token:") and f.endswith("got '***'") for f in found)


def test_redacted_masks_secrets_and_is_json() -> None:
    text = MINIMAL.replace("[queue:support]", "[redis]\nurl = redis://app:pw123@r:6379/1\n")
    text += "[http]\ntoken = t0k3n\n[queue:support]\n"
    shown = parse_config(text, {}).redacted()
    dumped = json.dumps(shown)
    for secret in ("ari-secret-1", "ami-secret-2", "pw123", "t0k3n"):
        assert secret not in dumped
    assert shown["ari"]["password"] == "***"
    assert shown["ami"]["secret"] == "***"
    assert shown["http"]["token"] == "***"
    assert shown["redis"]["url"] == "redis://app:***@r:6379/1"
    assert shown["queue:support"]["prompt_enter_number"] == [
        "sound:privacy-prompt",
        "sound:vm-then-pound",
    ]
    assert "password" not in repr(parse_config(text, {}))


# --- environment -------------------------------------------------------------------


def test_env_supplies_and_overrides_values() -> None:
    text = "[ami]\nsecret = s\n[queue:support]\nmax_attempts = 2\n[queue:sales-eu]\n"
    env = {
        "CALLBACK_ARI_ARI_PASSWORD": "from-env",
        "CALLBACK_ARI_QUEUE_SUPPORT_MAX_ATTEMPTS": "7",
        "CALLBACK_ARI_QUEUE_SALES_EU_REGION": "gb",
        "CALLBACK_ARI_REDIS_URL": "redis://10.0.0.5:6380/2",
        "PATH": "/usr/bin",
    }
    config = parse_config(text, env)
    assert config.ari.password == "from-env"
    assert config.queues["support"].max_attempts == 7
    assert config.queues["sales-eu"].region == "GB"
    assert config.redis.url == "redis://10.0.0.5:6380/2"


def test_env_problems_name_the_variable() -> None:
    env = {
        "CALLBACK_ARI_QUEUE_SUPPORT_MAX_ATTEMPTS": "0",
        "CALLBACK_ARI_QUEUE_NOSUCH_MAX_ATTEMPTS": "3",
        "CALLBACK_ARI_ARI_PASWORD": "typo",
    }
    assert problems(MINIMAL, env) == [
        "[environment] CALLBACK_ARI_ARI_PASWORD: not a known setting "
        "(a queue needs its [queue:NAME] section in the file)",
        "[environment] CALLBACK_ARI_QUEUE_NOSUCH_MAX_ATTEMPTS: not a known setting "
        "(a queue needs its [queue:NAME] section in the file)",
        "[queue:support] max_attempts: must be >= 1 "
        "($CALLBACK_ARI_QUEUE_SUPPORT_MAX_ATTEMPTS), got '0'",
    ]


def test_load_config_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cb.conf"
    path.write_text("[ami]\nsecret = s\n[queue:support]\n")
    monkeypatch.setenv("CALLBACK_ARI_ARI_PASSWORD", "env-pw")
    assert load_config(path).ari.password == "env-pw"


# --- the value object --------------------------------------------------------------


def test_config_is_frozen_and_queues_read_only() -> None:
    config = parse_config(MINIMAL, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.general = GeneralConfig()  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.queues["x"] = QueueConfig(name="x")  # type: ignore[index]
    built = Config(queues={"q": QueueConfig(name="q")})
    with pytest.raises(TypeError):
        built.queues["y"] = QueueConfig(name="y")  # type: ignore[index]


def test_values_are_typed() -> None:
    text = MINIMAL + "offer_threshold = 0\nallow_international = on\nhours = weekdays 08:00-18:00\n"
    text += "[ami]\nping_interval = 2.5\n"
    config = parse_config(text, {})
    q = config.queues["support"]
    assert q.offer_threshold == 0 and q.allow_international is True
    assert q.hours == "weekdays 08:00-18:00"
    assert config.ami.ping_interval == 2.5


def test_dialing_mode_is_customer_first_or_agent_first() -> None:
    text = "[ari]\npassword = x\n[ami]\nsecret = y\n[queue:support]\ndialing_mode = agent_first\n"
    assert parse_config(text, env={}).queues["support"].dialing_mode == "agent_first"
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace("agent_first", "preview"), env={})
    assert "[queue:support] dialing_mode: must be one of customer_first, agent_first" in str(
        info.value
    )


def test_spanish_queue_gets_prompts_that_exist_in_spanish_sounds() -> None:
    """Debian's Spanish core sounds have no you-entered, if-correct-press, ...: a Spanish
    queue's defaults use files that exist in es, and an explicit prompt still wins."""
    text = MINIMAL + "[queue:ventas]\nlanguage = es\nprompt_stored = recording:guardado\n"
    q = parse_config(text, env={}).queues["ventas"]
    assert q.language == "es"
    assert q.prompts["readback_intro"] == ("sound:vm-num-i-have",)
    assert q.prompts["confirm_number"] == (
        "sound:vm-press",
        "sound:digits/1",
        "sound:vm-calldiffnum",
    )
    assert q.prompts["stored"] == ("recording:guardado",)
    assert parse_config(MINIMAL + "[queue:s]\n", env={}).queues["s"].prompts["readback_intro"] == (
        "sound:you-entered",
    )


def test_language_must_be_a_language_code() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL + "[queue:s]\nlanguage = ../../etc\n", env={})
    assert "[queue:s] language: must be an Asterisk language code" in str(err.value)
