"""Every config key, declared once: section, name, type, default, accepted values and meaning.

The frozen dataclasses below are the configuration the service reads. Each field is declared
with ``setting()``, which records its converter (type and range) and its documentation; the
loader's key tables, the README reference and the example ``dialplan/callback_ari.conf`` are
all derived from these declarations (``python -m callback_ari.config.docs --write``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from types import MappingProxyType
from typing import Any, TypeVar

from callback_ari.config import schema as check
from callback_ari.config.schema import (
    CONTEXT,
    HOST,
    IDENT,
    MASK,
    MEDIA_LIST,
    PORT,
    QUEUE_PREFIX,
    Converter,
    boolean,
    choice,
    host_port,
    http_url,
    integer,
    name,
    number,
    redact_url,
    redis_url,
    secret,
    str_list,
)
from callback_ari.core import phone
from callback_ari.core.prompts import DEFAULT_PROMPTS, PROMPT_NAMES, PROMPTS

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Doc:
    """How one key is read and documented."""

    convert: Converter
    text: str  # what it means, for an administrator
    shown_default: str = ""  # the default in words when the value is computed ("the host name")
    example: str = ""  # an example value, shown as "; example: key = ..." in the example file
    placeholder: bool = False  # the example file sets ``example`` (a required secret)
    secret: bool = False  # never printed or logged
    required: bool = False
    repeatable: bool = False  # may be repeated; the values are joined into one list
    masked: bool = False  # may hold a password: kept out of repr, shown redacted


def setting(default: T, convert: Converter, text: str, **doc: Any) -> T:
    """A config key's declaration: its default (typed as the value), converter and docs."""
    meta = {"doc": Doc(convert, " ".join(text.split()), **doc)}
    hidden = bool(doc.get("secret") or doc.get("masked"))
    return field(default=default, repr=not hidden, metadata=meta)


def computed(factory: Callable[[], T], convert: Converter, text: str, **doc: Any) -> T:
    """A key whose default is computed at start-up (``shown_default`` says how)."""
    meta = {"doc": Doc(convert, " ".join(text.split()), **doc)}
    return field(default_factory=factory, metadata=meta)


def doc_of(f: Field[Any]) -> Doc:
    doc = f.metadata.get("doc")
    if not isinstance(doc, Doc):
        raise TypeError(f"{f.name} is not declared with setting()")
    return doc


def default_of(f: Field[Any]) -> object:
    if f.default is not MISSING:
        return f.default
    return None


# --- the sections ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneralConfig:
    app: str = setting(
        "callback-ari", name(IDENT, "letters, digits, '_', '.' or '-'"),
        "Stasis application name; must match Stasis(callback-ari,...) in "
        "extensions_callback.conf.",
    )  # fmt: skip
    instance_id: str = computed(
        socket.gethostname, name(IDENT, "letters, digits, '_', '.' or '-'"),
        "Identifies this process as a lease owner in Redis when several instances share one "
        "Redis.",
        shown_default="the host name", example="pbx1",
    )  # fmt: skip
    mask_numbers: bool = setting(
        True, boolean, "Show only the last 4 digits of phone numbers in logs."
    )
    log_level: str = setting(
        "info", choice("debug", "info", "warning", "error", "critical"),
        "The least severe level that is logged.",
    )  # fmt: skip
    log_format: str = setting(
        "auto", choice("auto", "json", "console", "journal"),
        "json (JSON lines), console (coloured, for humans), journal (JSON lines prefixed with "
        "the syslog priority, <3> for errors, so journalctl -p works) or auto (console on a "
        "terminal, JSON otherwise; under systemd, whenever stdout is the journal, lines get the "
        "prefix). --log-format overrides it.",
    )  # fmt: skip
    lease_seconds: int = setting(
        60, integer(5, 3600),
        "How long (seconds) an instance owns a callback it is dialling; another instance "
        "retries it only after the lease expired.",
    )  # fmt: skip
    resync_interval: int = setting(
        30, integer(1, 3600),
        "Every N seconds re-read queue state from AMI and channels from ARI, repairing anything "
        "a lost event left behind.",
    )  # fmt: skip
    dialogue_timeout: int = setting(
        180, integer(10, 3600),
        "Longest an offer dialogue with a caller may last (seconds) before the caller is "
        "returned to the queue.",
    )  # fmt: skip
    recording_retention: int = setting(
        0, integer(0, 30 * 86400),
        "Seconds a caller's recorded message (record_message) is kept after its callback "
        "became final (connected, failed, cancelled, expired); 0 = delete it at the next "
        "sweep (every 5 s). A sweep also deletes recordings whose callback is gone.",
    )  # fmt: skip
    recording_dir: str = setting(
        "/var/spool/asterisk/recording",
        name(r"/[A-Za-z0-9_./-]*", "an absolute path (letters, digits, _ . / -)"),
        "Asterisk's directory of ARI stored recordings (astspooldir/recording) as seen from "
        "this host: when the service runs on the Asterisk host, check verifies it exists and "
        "Asterisk may write to it. (The whisper plays from Asterisk's own "
        "${ASTSPOOLDIR}/recording.)",
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AriConfig:
    url: str = setting(
        "http://127.0.0.1:8088", http_url,
        "Asterisk's HTTP server, WITHOUT /ari (the client adds it). Credentials never go in the "
        "URL. https:// when Asterisk serves TLS.",
    )  # fmt: skip
    username: str = setting(
        "callback-ari", name(r"[^\s:]+", "a user name without spaces or ':'"),
        "ARI user from ari.conf.",
    )  # fmt: skip
    password: str = setting(
        "", secret,
        "REQUIRED. That user's password (secret: never printed or logged). Better: "
        "CALLBACK_ARI_ARI_PASSWORD. The example value matches ari.conf in this kit.",
        example="change-me-to-a-long-random-secret", placeholder=True, secret=True, required=True,
    )  # fmt: skip
    verify_tls: bool = setting(True, boolean, "Verify the TLS certificate when url is https://.")


@dataclass(frozen=True, slots=True)
class AmiConfig:
    host: str = setting(
        "127.0.0.1", name(HOST, "a host name or IP address"),
        "Asterisk Manager Interface, for queue callers and members.",
    )  # fmt: skip
    port: int = setting(5038, integer(1, 65535), "TCP port of the AMI.")
    username: str = setting(
        "callback-ari", name(r"[^\s]+", "a user name without spaces"), "manager.conf user."
    )
    secret: str = setting(
        "", secret,
        "REQUIRED. That user's secret (never printed or logged). Better: CALLBACK_ARI_AMI_SECRET. "
        "The example value matches manager.conf in this kit.",
        example="change-me-to-a-long-random-secret", placeholder=True, secret=True, required=True,
    )  # fmt: skip
    ping_interval: float = setting(
        10.0, number(0.5, 3600), "Send a Ping every N seconds (fractions allowed)."
    )
    ping_timeout: float = setting(
        5.0, number(0.5, 600), "Reconnect when a Ping is not answered within N seconds."
    )
    tls: bool = setting(False, boolean, "Connect with TLS (manager.conf tlsenable).")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = setting(
        "redis://127.0.0.1:6379/0", redis_url,
        "redis://[user:password@]host:port/db, rediss:// for TLS, or unix:///path/redis.sock. A "
        "password here is shown as *** by config check.",
        masked=True,
    )  # fmt: skip
    prefix: str = setting(
        "cbari", name(r"[A-Za-z0-9_.:-]+", "letters, digits, '_', '.', ':' or '-'"),
        "Prefix of every Redis key this service writes.",
    )  # fmt: skip
    audit_maxlen: int = setting(
        100000, integer(0), "Entries kept in the audit stream (0 = do not trim)."
    )
    sentinel_master: str = setting(
        "", name(IDENT, "a Sentinel master name", empty_ok=True),
        "Redis Sentinel: the master's name. Empty (and no sentinels) = connect to url directly. "
        "With Sentinel, url still supplies the password, db and TLS choice.",
    )  # fmt: skip
    sentinels: tuple[str, ...] = setting(
        (), str_list(host_port), "The sentinels, a host:port list (with sentinel_master).",
        example="10.0.0.1:26379, 10.0.0.2:26379", repeatable=True,
    )  # fmt: skip
    min_replicas: int = setting(
        0, integer(0, 16),
        'A new callback is promised to the caller ("stored") only after Redis WAIT confirms '
        "that this many replicas hold it; otherwise the caller goes back to the queue and the "
        "record is cancelled (cause not_replicated). 0 = the master's word is enough.",
    )  # fmt: skip
    min_replicas_timeout: float = setting(
        1.0, number(0.05, 60), "Seconds WAIT gives the replicas to confirm."
    )


@dataclass(frozen=True, slots=True)
class HttpConfig:
    enabled: bool = setting(
        True, boolean, "Status page, health check (/healthz), metrics (/metrics)."
    )
    bind: str = setting(
        "127.0.0.1", name(HOST, "a host name or IP address"),
        "Address to listen on; keep loopback unless behind a proxy.",
    )  # fmt: skip
    port: int = setting(8090, PORT, "TCP port (0 = any free port).")
    token: str = setting(
        "", secret,
        "Bearer token for the HTTP API (list/cancel/request callbacks). Empty turns the API "
        "off; status, health and metrics stay up. Secret.",
        secret=True,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AgiConfig:
    enabled: bool = setting(
        False, boolean,
        "FastAGI server offering callbacks to channels that cannot enter Stasis: "
        "AGI(agi://127.0.0.1:4573/offer,<queue>).",
    )  # fmt: skip
    bind: str = setting(
        "127.0.0.1", name(HOST, "a host name or IP address"), "Address the FastAGI server binds."
    )
    port: int = setting(4573, PORT, "TCP port of the FastAGI server (0 = any free port).")


@dataclass(frozen=True, slots=True)
class Prompts:
    """Media URIs for each step of the dialogues, by prompt name (``offer_prompts.PROMPTS``).

    A prompt not given uses its stock default; an empty tuple plays nothing.
    """

    media: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_PROMPTS)

    def __post_init__(self) -> None:
        unknown = set(self.media) - set(PROMPT_NAMES)
        if unknown:
            raise ValueError(f"unknown prompts: {', '.join(sorted(unknown))}")
        full = {n: tuple(self.media.get(n, DEFAULT_PROMPTS[n])) for n in PROMPT_NAMES}
        object.__setattr__(self, "media", MappingProxyType(full))

    def __getitem__(self, prompt: str) -> tuple[str, ...]:
        return self.media[prompt]

    def as_mapping(self) -> Mapping[str, tuple[str, ...]]:
        """``{prompt name: media URIs}`` for every prompt."""
        return self.media

    def all_uris(self, *, skip: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """Every media URI used by any prompt but ``skip``, once each, in declaration order."""
        used = (uris for name, uris in self.media.items() if name not in skip)
        return tuple(dict.fromkeys(uri for uris in used for uri in uris))


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Callback settings of one Asterisk queue (section ``[queue:NAME]``)."""

    name: str
    enabled: bool = setting(True, boolean, "Offer and dispatch callbacks for this queue.")
    offer_threshold: int = setting(
        120, integer(0, 86400),
        "Offer a callback after the caller held this long, in seconds (0 = never by hold time, "
        "only by digit or estimated wait).",
    )  # fmt: skip
    offer_on_estimated_wait: int = setting(
        0, integer(0, 86400),
        "Also offer as soon as the estimated wait exceeds N seconds (0 = off).",
    )  # fmt: skip
    withdraw: bool = setting(
        True, boolean,
        "Pull callers out of the queue with AMI QueueWithdrawCaller when it is time to offer. "
        "no = rely on the queue timeout in the dialplan.",
    )  # fmt: skip
    request_digit: str = setting(
        "1", check.name(r"[0-9*#]", "one DTMF digit (0-9, * or #)"),
        "The digit callers press in the queue to ask for a callback (0-9, *, #); keep it equal "
        "to the extension in [callback-exit].",
    )  # fmt: skip
    dial_template: str = setting(
        "PJSIP/{number}@trunk", check.dial_template,
        "How to dial the customer. {number} is the national number for domestic callers and "
        "+E.164 for international ones, {e164} is always +E.164. Nothing else may appear in "
        "braces; letters, digits and / @ : . _ + * # - only. Examples: PJSIP/{number}@trunk, "
        "PJSIP/{e164}@carrier, Local/{number}@outbound.",
    )  # fmt: skip
    caller_id: str = setting(
        "", check.caller_id,
        'Caller ID shown to the customer, e.g. "Support" <2025550100>. Empty = the trunk\'s '
        "default.",
    )  # fmt: skip
    ring_timeout: int = setting(30, integer(5, 600), "Ring the customer for up to N seconds.")
    confirm_timeout: int = setting(
        10, integer(1, 120),
        'The customer has N seconds to press 1 after the "press 1" prompt, which plays once '
        "(a key during the prompt counts too); otherwise it counts as not confirmed "
        "(voicemail, machine) and is hung up.",
    )  # fmt: skip
    max_attempts: int = setting(3, integer(1, 100), "Dial attempts per callback before it fails.")
    retry_interval: int = setting(120, integer(1, 86400), "Seconds between attempts.")
    first_attempt_grace: int = setting(
        5, integer(0, 3600),
        "Seconds between the caller's own inbound call hanging up (its channel gone from "
        "Asterisk) and the first attempt, so nobody is dialled while still hearing goodbye. "
        "Web requests have no inbound call and get no grace.",
    )  # fmt: skip
    max_age: int = setting(
        14400, integer(60, 30 * 86400),
        "A callback not connected within N seconds of the request expires.",
    )  # fmt: skip
    max_pending: int = setting(
        200, integer(1, 1_000_000),
        "Refuse new callbacks while this many are waiting; callers then keep holding.",
    )  # fmt: skip
    hours: str = setting(
        "", str.strip,  # checked together with the queue's timezone
        "When callbacks are dialled, in the queue's time zone. Days mon..sun, ranges (mon-fri), "
        "lists (mon,wed), daily/weekdays/weekends, then one or more HH:MM-HH:MM; groups "
        'separated by "," or ";". An end before the start runs past midnight (fri '
        "22:00-02:00). Empty = always open.",
        example="mon-fri 08:00-18:00, sat 09:00-12:00",
    )  # fmt: skip
    timezone: str = setting(
        "UTC", check.timezone,
        "IANA time zone of hours, e.g. Europe/Berlin, America/New_York; daylight saving time "
        "is handled.",
    )  # fmt: skip
    after_hours: str = setting(
        "carry_over", choice("carry_over", "expire"),
        "Outside hours: carry_over (dial when open again, within max_age) or expire (drop "
        "callbacks still waiting when the hours close).",
    )  # fmt: skip
    region: str = setting(
        "US", check.region,
        "Two-letter region for reading numbers without a country code and deciding what is "
        "domestic (US, GB, DE, ...).",
    )  # fmt: skip
    language: str = setting(
        "", check.name(r"[A-Za-z0-9_]+", "an Asterisk language code like en, es, fr_FR",
                       empty_ok=True),
        "Language of the prompts, the read-back number and the wait estimate (Asterisk's "
        "sounds/<language>/ and its own say-number rules): en, es, fr, it, ru... Empty = the "
        "caller's channel language (CHANNEL(language), usually set by the PBX per trunk or "
        "route).",
    )  # fmt: skip
    allow_international: bool = setting(
        False, boolean,
        "Allow numbers outside region (dialled as +E.164). Even with an allow pattern an "
        "international number needs this.",
    )  # fmt: skip
    allow_patterns: tuple[str, ...] = setting(
        (), str_list(phone.check_pattern),
        "Asterisk extension patterns (_NXXNXXXXXX, X Z N [1-5] . !) or plain numbers, matched "
        "against the dialled form (2025551234, +442079460018) and +E.164. With allow_patterns "
        "set, only matching numbers are accepted -- including numbers phonenumbers thinks "
        "invalid (internal extensions). Emergency, premium-rate and shared-cost numbers are "
        "refused whatever the patterns say.",
        repeatable=True,
    )  # fmt: skip
    deny_patterns: tuple[str, ...] = setting(
        (), str_list(phone.check_pattern),
        "Patterns like allow_patterns for numbers that are refused; deny_patterns always win.",
        example="_876NXXXXXX, _809NXXXXXX", repeatable=True,
    )  # fmt: skip
    max_tries: int = setting(
        3, integer(1, 10),
        "Wrong entries a caller may make in the dialogue before returning to the queue.",
    )  # fmt: skip
    digit_timeout: float = setting(
        5.0, number(0.1, 60),
        "Seconds between keyed digits before the number counts as complete (fractions "
        "allowed).",
    )  # fmt: skip
    response_timeout: float = setting(
        8.0, number(0.1, 120),
        "Seconds of silence after a menu before it is repeated (fractions allowed).",
    )  # fmt: skip
    connect_context: str = setting(
        "callback-connect", CONTEXT,
        "Dialplan context a confirmed callback is continued into (extension = queue name); see "
        "[callback-connect] in extensions_callback.conf.",
    )  # fmt: skip
    return_context: str = setting(
        "callback-return", CONTEXT, "Context a caller who declines is returned to."
    )
    agent_context: str = setting(
        "callback-agent-first", CONTEXT,
        "Context the agent's call runs in with dialing_mode = agent_first (whisper, then Dial "
        "of the customer, who must press 1 before the bridge); see [callback-agent-first] and "
        "[callback-agent-confirm] in extensions_callback.conf.",
    )  # fmt: skip
    queue_priority: int = setting(
        10, integer(0, 2_147_483_647), "QUEUE_PRIO a confirmed callback joins the queue with."
    )
    wrapup_time: int = setting(
        0, integer(0, 3600),
        "The queue's wrapuptime from queues.conf, in seconds. Asterisk does not report it over "
        "AMI, so callback-ari needs it to know when a member who just finished a call is ready "
        "again.",
    )  # fmt: skip
    priority_boost: int = setting(
        0, integer(0, 86400),
        "Seconds subtracted from a callback's join time when ordering it against live callers: "
        "> 0 favours callbacks.",
    )  # fmt: skip
    on_recall: str = setting(
        "cancel", choice("cancel", "keep"),
        "When a caller with a pending callback calls in again: cancel the callback, or keep it.",
    )  # fmt: skip
    dialing_mode: str = setting(
        "customer_first", check.dialing_mode,
        "customer_first: ring the customer, hear them press 1, then join the queue at the "
        "head. agent_first: reserve a ready member, ring them, whisper the reason and the "
        "customer's number, then dial the customer and bridge the two once the customer "
        "pressed 1 (the agent's call runs agent_context).",
    )  # fmt: skip
    announce_wait: bool = setting(
        True, boolean,
        "After storing, tell the caller when to expect the call: the estimated wait at the "
        "position they left, from the service's handle-time estimator, rounded up so it never "
        "promises too early (whole minutes up to 10, then 5-minute steps to an hour, then "
        "15-minute steps). Nothing is said while there is no estimate yet.",
    )  # fmt: skip
    # --- issue 16: position, reasons, abandoned callers --------------------------------------
    announce_position: bool = setting(
        False, boolean,
        "Before the offer, tell the caller their position in the queue and the estimated wait "
        "at that position (prompt_position, prompt_wait_estimate).",
    )  # fmt: skip
    reasons: tuple[str, ...] = setting(
        (), check.reasons,
        "Reason menu after the number is confirmed: DIGIT:NAME entries, each optionally "
        "=sound:FILE (what is said for it; default sound:callback-reason-NAME). The caller "
        "hears \"For <reason>, press <digit>\" per entry; silence or wrong keys book the "
        "callback without a reason. The reason is kept on the callback (API, show, audit, "
        "report --by reason, metric callback_reasons_total) and whispered to the agent before "
        "the bridge (prompt_whisper, then the reason). Empty = no menu.",
        example="1:billing, 2:technical, 3:other",
    )  # fmt: skip
    record_message: int = setting(
        0, integer(0, 300),
        "After the number (and the reason) is confirmed and the callback booked, record a "
        "message of at most N seconds (0 = off): the caller hears prompt_record_intro, a beep, "
        "and # or silence (record_silence) ends it; hanging up keeps it. The agent hears it in "
        "the whisper (after prompt_whisper and the reason); it is deleted after the callback "
        "(recording_retention). The ARI offer records; the FastAGI offer does not.",
    )  # fmt: skip
    record_silence: int = setting(
        4, integer(0, 60),
        "Seconds of silence that end a recorded message (0 = silence does not end it).",
    )  # fmt: skip
    on_abandon: str = setting(
        "off", choice("off", "callback"),
        "callback: a caller who hangs up while holding, after at least abandon_min_hold "
        "seconds, gets a callback (origin abandon) when the caller ID is valid under the "
        "number rules, is not on the queue's do-not-call list (callback-ari dnc add) and has "
        "no live callback. Withheld caller IDs and callers the service withdrew for an offer "
        "never get one.",
    )  # fmt: skip
    abandon_min_hold: int = setting(
        30, integer(0, 86400),
        "Seconds a caller must have held before hanging up for on_abandon = callback.",
    )  # fmt: skip
    reserve_member: bool = setting(
        True, boolean,
        "Reserve a ready member for the callback whose turn it is: pause it in this queue (AMI "
        "QueuePause, reason <app>:<callback id>, needs write = agent) while the customer is "
        "rung and confirms, and unpause it the moment the customer has joined the queue at the "
        "head, so a later live caller cannot take it. While a due callback finds no ready "
        "member, the busy members (on a call, ringing, in wrap-up) nobody paused are pre-held: "
        "paused with the reason <app>:hold, so app_queue cannot ring the first one to free up "
        "for a live caller; that one is reserved for the callback and the others are unpaused "
        "at once. no = neither: the customer may wait for the next member.",
    )  # fmt: skip
    prompts: Prompts = field(default_factory=Prompts)

    def unused_prompts(self) -> frozenset[str]:
        """Prompts this queue's settings never play (their sounds need not exist)."""
        unused = set()
        if not self.reasons:
            unused |= {"reason_for", "reason_press"}
        if not self.reasons and not self.record_message:
            unused.add("whisper")
        if not self.record_message:
            unused.add("record_intro")
        if not self.announce_position:
            unused |= {"position", "position_first"}
        return frozenset(unused)


def _no_queues() -> Mapping[str, QueueConfig]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the service reads from its config file, validated."""

    general: GeneralConfig = field(default_factory=GeneralConfig)
    ari: AriConfig = field(default_factory=AriConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    queues: Mapping[str, QueueConfig] = field(default_factory=_no_queues)

    def __post_init__(self) -> None:
        if not isinstance(self.queues, MappingProxyType):
            object.__setattr__(self, "queues", MappingProxyType(dict(self.queues)))

    def redacted(self) -> dict[str, dict[str, Any]]:
        """The effective configuration as ``{section: {key: value}}`` with secrets as ***."""
        out: dict[str, dict[str, Any]] = {}
        for section in FIXED_SECTIONS:
            values = getattr(self, section)
            out[section] = {
                f.name: _shown(section, f.name, getattr(values, f.name)) for f in fields(values)
            }
        for queue, q in self.queues.items():
            shown = {f.name: _plain(getattr(q, f.name)) for f in fields(q)}
            del shown["name"], shown["prompts"]
            for prompt, media in q.prompts.as_mapping().items():
                shown[PROMPT_PREFIX + prompt] = _plain(media)
            out[QUEUE_PREFIX + queue] = shown
        return out


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _shown(section: str, key: str, value: object) -> object:
    """How a value may be displayed: secrets masked, redis URL password masked."""
    if (section, key) in SECRETS:
        return MASK if value else ""
    if (section, key) == ("redis", "url") and isinstance(value, str):
        try:
            return redact_url(value)
        except ValueError:
            return MASK
    return _plain(value)


# --- derived tables: what the loader and the docs use -------------------------------------

SECTIONS: dict[str, type[Any]] = {
    "general": GeneralConfig,
    "ari": AriConfig,
    "ami": AmiConfig,
    "redis": RedisConfig,
    "http": HttpConfig,
    "agi": AgiConfig,
}
FIXED_SECTIONS = tuple(SECTIONS)
PROMPT_PREFIX = "prompt_"
PROMPT_TEXT = (
    "Prompts: comma separated media URIs played in order, each sound:NAME, recording:NAME, "
    "digits:N, number:N or tone:T; an empty value plays nothing. The defaults are stock "
    'asterisk-core-sounds-en files that only approximate the wording (there is no stock "we '
    'can call you back"); record your own, e.g. sound:custom/cb-offer, for production. '
    "`callback-ari check` verifies that every sound: prompt exists on the Asterisk server."
)


def declared(cls: type[Any]) -> dict[str, tuple[Field[Any], Doc]]:
    """The keys a section dataclass declares with ``setting()``, in order."""
    return {f.name: (f, doc_of(f)) for f in fields(cls) if "doc" in f.metadata}


def _prompt_docs() -> dict[str, Doc]:
    return {PROMPT_PREFIX + p.name: Doc(MEDIA_LIST, p.hears, repeatable=True) for p in PROMPTS}


DOCS: dict[str, dict[str, Doc]] = {
    section: {k: d for k, (_, d) in declared(cls).items()} for section, cls in SECTIONS.items()
}
QUEUE_DOCS: dict[str, Doc] = {
    **{k: d for k, (_, d) in declared(QueueConfig).items()},
    **_prompt_docs(),
}
SCHEMA: dict[str, dict[str, Converter]] = {
    section: {k: d.convert for k, d in docs.items()} for section, docs in DOCS.items()
}
QUEUE_SCHEMA: dict[str, Converter] = {k: d.convert for k, d in QUEUE_DOCS.items()}
SECRETS = frozenset((s, k) for s, docs in DOCS.items() for k, d in docs.items() if d.secret)
REQUIRED = tuple((s, k) for s, docs in DOCS.items() for k, d in docs.items() if d.required)
LIST_KEYS = frozenset(
    k for docs in (*DOCS.values(), QUEUE_DOCS) for k, d in docs.items() if d.repeatable
)


def schema_for(section: str) -> dict[str, Converter] | None:
    """The keys of a normalised section name, or None if the section is unknown."""
    if section.startswith(QUEUE_PREFIX):
        return QUEUE_SCHEMA
    return SCHEMA.get(section)
