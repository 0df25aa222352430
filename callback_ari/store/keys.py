"""The Redis key schema of the callback store, written once: Python keys and the Lua header.

``<p>`` is the namespace ``{prefix}`` (the braces are a cluster hash tag: one slot per
namespace). Every key the store touches is one of::

  <p>:<name>          one of GLOBAL_KEYS below
  <p>:cb:<id>         hash   one callback; fields in FIELDS. Terminal records get PEXPIRE ttl
  <p>:q:<Q>:<index>   one of INDEXES below, per queue
  <p>:q:<Q>:<m>:<I>   one of MEMBER_KEYS below, per queue member interface I

The Lua scripts never spell a key, an index or a state: they use the names ``lua_header()``
generates from these tables (``K_QUEUES``, ``kq(q, I_READY)``, ``S_PENDING`` ...), and a test
fails when a script uses a name that is not declared here.
"""

from __future__ import annotations

from dataclasses import dataclass

from callback_ari.models import TERMINAL_STATES, Outcome, State

RECORD = "cb"
QUEUE = "q"

# name -> (Redis type, what it holds)
GLOBAL_KEYS: dict[str, tuple[str, str]] = {
    "seq": ("string", "INCR counter behind generated callback ids (1, 2, ...)"),
    "queues": ("set", "every queue name that ever held a callback"),
    "audit": ("stream", "one entry per transition: id queue from to outcome cause attempt ts"),
    "corrupt": ("set", "ids whose hash was found corrupt and dropped from the indexes"),
    "dialnum": ("hash", "number -> id of the callback dialing it, any queue (never two at once)"),
}

# The per-queue indexes: part -> (Redis type, what it holds)
INDEXES: dict[str, tuple[str, str]] = {
    "ready": ("zset", "pending and due, score join_time_ms - priority*1000"),
    "sched": ("zset", "pending, not yet due, score next_attempt_ms"),
    "retry": ("zset", "retry_wait, score next_attempt_ms"),
    "dial": ("zset", "dialing, score lease_expires_ms"),
    "answered": (
        "zset",
        "connected moments ago, score until when (ms) it still counts as dialing (a dispatch "
        "pass may not have seen its member busy yet)",
    ),
    "age": ("zset", "every live callback, score created_ms (expiry by age)"),
    "nums": ("hash", "number -> id of the one live callback for (queue, number)"),
    "dnc": ("set", "do-not-call numbers (dial form): no abandon follow-up for them"),
    **{
        f"s:{s.value}": ("zset", f"{s.value} callbacks, score updated_ms (ttl-pruned)")
        for s in State
        if s in TERMINAL_STATES
    },
}

# Per queue member: part -> (Redis type, what it holds)
MEMBER_KEYS: dict[str, tuple[str, str]] = {
    "res": (
        "string",
        '"<owner>|<callback id>": the member is reserved for that callback (PX = the '
        'reservation deadline); "<owner>|~<n>" while a claim takes it; "<owner>|~hold<n>" '
        "while it is pre-held (PX 15 s, refreshed)",
    ),
}

# The indexes that hold each state, in listing order.
STATE_INDEXES: dict[State, tuple[str, ...]] = {
    State.PENDING: ("ready", "sched"),
    State.RETRY_WAIT: ("retry",),
    State.DIALING: ("dial",),
    **{s: (f"s:{s.value}",) for s in State if s in TERMINAL_STATES},
}
# The indexes a live record leaves when it ends (terminal indexes aside).
LIVE_INDEXES: tuple[str, ...] = ("ready", "sched", "retry", "dial", "age")
# The columns of a ``counts`` row, in order.
COUNT_INDEXES: tuple[str, ...] = tuple(
    part for s in (State.PENDING, State.RETRY_WAIT, State.DIALING) for part in STATE_INDEXES[s]
) + tuple(f"s:{s.value}" for s in State if s in TERMINAL_STATES)

# Hash fields of a record (short: keeps the hash a listpack, ~300 bytes).
FIELDS: dict[str, str] = {
    "q": "queue", "n": "number", "nm": "caller_name", "ch": "source_channel",
    "j": "join_time_ms", "c": "created_ms", "s": "state", "a": "attempts",
    "o": "last_outcome", "ca": "last_cause", "na": "next_attempt_ms",
    "lo": "lease_owner (current or last attempt)", "le": "lease_expires_ms (0 unless dialing)",
    "u": "updated_ms", "pr": "priority (seconds of boost)", "or": "origin", "po": "position",
    "rs": "reason (the caller's pick from the reason menu; absent when none)",
    "rc": "recording (name of the caller's recorded message in ARI's stored recordings)",
}  # fmt: skip
REQUIRED_FIELDS: tuple[str, ...] = ("q", "n", "j", "c", "s", "a")
INT_FIELDS: tuple[str, ...] = ("j", "c", "a", "na", "le", "u", "pr", "po")


def _lua_name(prefix: str, name: str) -> str:
    return prefix + name.replace(":", "_").upper()


@dataclass(frozen=True, slots=True)
class KeySchema:
    """The keys of one namespace (``{cbari}``); every builder checks the name is declared."""

    namespace: str

    def key(self, *parts: str) -> str:
        """Any declared key: ``key("seq")``, ``key("cb", id)``, ``key("q", queue, "ready")``."""
        match parts:
            case (name,) if name in GLOBAL_KEYS:
                pass
            case (kind, _) if kind == RECORD:
                pass
            case (kind, _, part) if kind == QUEUE and part in INDEXES:
                pass
            case (kind, _, part, _) if kind == QUEUE and part in MEMBER_KEYS:
                pass
            case _:
                raise ValueError(f"not a key of the store schema: {':'.join(parts)!r}")
        return ":".join((self.namespace, *parts))

    def record(self, cb_id: str) -> str:
        return self.key(RECORD, cb_id)

    def index(self, queue: str, part: str) -> str:
        return self.key(QUEUE, queue, part)

    def classify(self, key: str) -> str | None:
        """The schema entry a key belongs to (``"seq"``, ``"cb"``, ``"q:*:ready"``), or None."""
        head, sep, rest = key.partition(":")
        if head != self.namespace or not sep:
            return None
        if rest in GLOBAL_KEYS:
            return rest
        kind, sep, tail = rest.partition(":")
        if kind == RECORD and sep and tail:
            return RECORD
        if kind == QUEUE and sep:
            for part in MEMBER_KEYS:
                queue, found, member = tail.partition(f":{part}:")
                if found and queue and member:
                    return f"{QUEUE}:*:{part}:*"
            for part in INDEXES:
                queue = tail.removesuffix(":" + part)
                if queue != tail and queue:
                    return f"{QUEUE}:*:{part}"
        return None


def lua_names() -> frozenset[str]:
    """Every name ``lua_header()`` declares for the scripts."""
    return frozenset(_declarations())


def _lua_table(items: dict[str, str]) -> str:
    return "{" + ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in items.items()) + "}"


def _lua_set(items: tuple[str, ...] | list[str]) -> str:
    return "{" + ", ".join(f"[{_lua_str(k)}] = true" for k in items) + "}"


def _lua_list(items: tuple[str, ...]) -> str:
    return "{" + ", ".join(_lua_str(k) for k in items) + "}"


def _lua_str(text: str) -> str:
    if "'" in text or "\\" in text:
        raise ValueError(f"not a plain name: {text!r}")
    return f"'{text}'"


def _declarations() -> dict[str, str]:
    """Lua name -> Lua expression, in declaration order."""
    out: dict[str, str] = {"P": "ARGV[1]"}
    for name in GLOBAL_KEYS:
        out[_lua_name("K_", name)] = f"P .. {_lua_str(':' + name)}"
    for part in INDEXES:
        out[_lua_name("I_", part)] = _lua_str(part)
    for state in State:
        out[_lua_name("S_", state.value)] = _lua_str(state.value)
    for outcome in Outcome:
        out[_lua_name("O_", outcome.value)] = _lua_str(outcome.value)
    out["GLOBAL_KEYS"] = (
        "{" + ", ".join(f"[{_lua_name('K_', n)}] = {_lua_str(t)}" for n, (t, _) in
                        GLOBAL_KEYS.items()) + "}"
    )  # fmt: skip
    out["INDEXES"] = _lua_table({part: kind for part, (kind, _) in INDEXES.items()})
    out["DONE_INDEX"] = _lua_table({s.value: f"s:{s.value}" for s in State if s in TERMINAL_STATES})
    out["TERMINAL_INDEXES"] = _lua_set([f"s:{s.value}" for s in State if s in TERMINAL_STATES])
    out["LIVE_INDEXES"] = _lua_list(LIVE_INDEXES)
    out["COUNT_INDEXES"] = _lua_list(COUNT_INDEXES)
    out["STATES"] = _lua_set([s.value for s in State])
    out["LIVE"] = _lua_set([s.value for s in State if s.is_live])
    out["REQUIRED"] = _lua_list(REQUIRED_FIELDS)
    out["INTS"] = _lua_list(INT_FIELDS)
    return out


def lua_header() -> str:
    """The Lua prologue every store script starts with: the schema as Lua locals."""
    lines = ["-- generated by callback_ari.store.keys.lua_header(): do not edit in a script"]
    lines += [f"local {name} = {expr}" for name, expr in _declarations().items()]
    record, queue = _lua_str(f":{RECORD}:"), _lua_str(f":{QUEUE}:")
    lines.append(f"local function kcb(id) return P .. {record} .. id end")
    lines.append(f"local function kq(q, part) return P .. {queue} .. q .. ':' .. part end")
    return "\n".join(lines) + "\n"
