"""A subset of extensions.conf: parsing, extension patterns, ``${...}`` and ``$[...]``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# The dialplan of the recordings (tests/data/asterisk-22/README.md) minus [customers] and
# [agents], which the fake plays from number behaviours and queue members instead.
RECORDED_DIALPLAN = """
[globals]
CB_WAIT=5
[incoming]
exten => support,1,Answer()
 same => n,Queue(support,,,,${CB_WAIT})
 same => n,GotoIf($["${QUEUESTATUS}" = "TIMEOUT"]?offer)
 same => n,Hangup()
 same => n(offer),Stasis(callback-ari,offer,support)
 same => n,Hangup()
exten => stasisprobe,1,Answer()
 same => n,Stasis(callback-ari,probe)
 same => n,Set(GLOBAL(LAST_STASISSTATUS)=${STASISSTATUS})
 same => n,UserEvent(StasisProbe,Status: ${STASISSTATUS})
 same => n,Wait(1)
 same => n,Hangup()
[callback-queue]
exten => support,1,Set(QUEUE_PRIO=10)
 same => n,Queue(support)
 same => n,Hangup()
[qcaller]
exten => join,1,Answer()
 same => n,Queue(support)
 same => n,UserEvent(QueueResult,QueueStatus: ${QUEUESTATUS},WithdrawInfo: ${QUEUE_WITHDRAW_INFO})
 same => n,Hangup()
exten => joinc,1,Answer()
 same => n,Queue(support,c)
 same => n,UserEvent(QueueResult,QueueStatus: ${QUEUESTATUS},WithdrawInfo: ${QUEUE_WITHDRAW_INFO})
 same => n,Hangup()
"""

# dialplan/extensions_callback.conf of this project, per queue ({q}); {{ }} are literal braces.
KIT_TEMPLATE = """
[{incoming}]
exten => {q},1,Goto(callback-queue,{q},1)
[callback-queue]
exten => {q},1,NoOp(callback-ari: caller ${{CALLERID(num)}} enters queue ${{EXTEN}})
 same => n,Set(__CB_QUEUE=${{EXTEN}})
 same => n,ExecIf($["${{CB_JOIN}}" = ""]?Set(__CB_JOIN=${{STRFTIME(,,%s%3q)}}))
 same => n,Set(CB_WAIT={timeout})
 same => n(wait),Answer()
 same => n,Queue(${{EXTEN}},,,,${{CB_WAIT}},,,,${{CB_POSITION}})
 same => n,GotoIf($["${{QUEUESTATUS}}" = "TIMEOUT"]?callback-offer,${{EXTEN}},timeout)
 same => n,GotoIf($["${{QUEUESTATUS}}" = "WITHDRAW"]?callback-offer,${{EXTEN}},withdraw)
 same => n,Hangup()
[callback-offer]
exten => {q},1(timeout),Set(CB_ENTRY=timeout)
 same => n,Goto(offer)
 same => n(withdraw),Set(CB_ENTRY=withdraw)
 same => n,Goto(offer)
 same => n(digit),Set(CB_ENTRY=digit)
 same => n(offer),Stasis({app},offer,${{EXTEN}},${{CB_ENTRY}},${{CB_JOIN}},${{QUEUEPOSITION}})
 same => n,GotoIf($["${{STASISSTATUS}}" = "FAILED"]?callback-return,${{EXTEN}},1)
 same => n,Hangup()
[callback-return]
exten => {q},1,NoOp(callback-ari: ${{CALLERID(num)}} returns to ${{EXTEN}} at ${{CB_POSITION}})
 same => n,Set(CB_WAIT=)
 same => n,Goto(callback-queue,${{EXTEN}},wait)
[callback-connect]
exten => {q},1,NoOp(callback-ari: callback ${{CB_ID}} joins ${{EXTEN}})
 same => n,Set(QUEUE_PRIO=${{IF($["${{CB_PRIO}}" = ""]?10:${{CB_PRIO}})}})
 same => n,Queue(${{EXTEN}},,,,,,,,1)
 same => n,Hangup()
"""
EXIT_TEMPLATE = """
[callback-exit]
exten => {digit},1,Goto(callback-offer,${{CB_QUEUE}},digit)
"""


@dataclass(frozen=True, slots=True)
class Step:
    """One priority: ``App(data)`` with an optional label."""

    priority: int
    label: str | None
    app: str
    data: str


@dataclass(eq=False)
class Extension:
    """An extension (or ``_pattern``) and its priorities."""

    name: str
    steps: dict[int, Step] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def add(self, priority: int, label: str | None, app: str, data: str) -> None:
        """Append a priority."""
        self.steps[priority] = Step(priority, label, app, data)
        if label:
            self.labels[label] = priority


Contexts = dict[str, dict[str, Extension]]

_LINE = re.compile(r"^(exten|same)\s*=>\s*(.*)$")
_PRIO = re.compile(r"^(n|\d+)(?:\((\w+)\))?$")


def split_app(text: str) -> tuple[str, str]:
    """``Queue(support,,,,5)`` -> (Queue, support,,,,5)."""
    text = text.strip()
    if "(" not in text:
        return text, ""
    app, _, rest = text.partition("(")
    return app.strip(), rest[: rest.rfind(")")] if ")" in rest else rest


def parse(text: str, contexts: Contexts, globals_: dict[str, str]) -> None:
    """Merge extensions.conf text into contexts (a re-defined extension replaces the old one)."""
    context: str | None = None
    current: Extension | None = None
    last = 0
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            context = line[1:-1].strip()
            contexts.setdefault(context, {})
            current = None
            continue
        if context == "globals":
            name, _, value = line.partition("=")
            globals_[name.strip()] = value.strip()
            continue
        m = _LINE.match(line)
        if m is None or context is None:
            continue
        kind, rest = m.groups()
        if kind == "exten":
            name, prio_text, app_text = [*rest.split(",", 2), "", ""][:3]
            current = Extension(name.strip())
            contexts[context][current.name] = current
        else:
            if current is None:
                continue
            prio_text, _, app_text = rest.partition(",")
        pm = _PRIO.match(prio_text.strip())
        if pm is None:
            continue
        last = last + 1 if pm.group(1) == "n" else int(pm.group(1))
        app, data = split_app(app_text)
        current.add(last, pm.group(2), app, data)


def pattern_match(pattern: str, exten: str) -> bool:
    """Asterisk extension matching: literal, or ``_`` pattern with X Z N [..] . !."""
    if not pattern.startswith("_"):
        return pattern == exten
    p, i = pattern[1:], 0
    for ch in exten:
        if i >= len(p):
            return False
        c = p[i].upper()
        if c in ".!":
            return True
        if c == "[":
            end = p.index("]", i)
            chars = p[i + 1 : end]
            ok = (
                any(
                    (a <= ch <= b) if sep == "-" else ch == a
                    for a, sep, b in re.findall(r"(.)(-?)(.?)", chars)
                )
                or ch in chars
            )
            if not ok:
                return False
            i = end + 1
            continue
        allowed = {"X": "0123456789", "Z": "123456789", "N": "23456789"}.get(c)
        if (allowed is not None and ch not in allowed) or (allowed is None and ch != p[i]):
            return False
        i += 1
    return i == len(p) or p[i:] in ("!", "")


def _find_close(text: str, start: int) -> int:
    """Index of the bracket closing the ``${`` or ``$[`` at start."""
    stack: list[str] = []
    i = start
    while i < len(text):
        two = text[i : i + 2]
        if two in ("${", "$["):
            stack.append("}" if two == "${" else "]")
            i += 2
            continue
        if stack and text[i] == stack[-1]:
            stack.pop()
            if not stack:
                return i
        i += 1
    return len(text)


def evaluate(expr: str) -> str:
    """``$[...]``: string/number comparisons (= != < > <= >=), else the text itself."""
    e = expr.strip()
    in_quote = False
    for i, c in enumerate(e):
        if c == '"':
            in_quote = not in_quote
            continue
        if in_quote:
            continue
        for op in ("!=", ">=", "<=", "=", ">", "<"):
            if e.startswith(op, i):
                a = e[:i].strip().strip('"')
                b = e[i + len(op) :].strip().strip('"')
                try:
                    x: float | str = float(a)
                    y: float | str = float(b)
                except ValueError:
                    x, y = a, b
                result = {
                    "!=": x != y,
                    ">=": x >= y,  # type: ignore[operator]
                    "<=": x <= y,  # type: ignore[operator]
                    "=": x == y,
                    ">": x > y,  # type: ignore[operator]
                    "<": x < y,  # type: ignore[operator]
                }[op]
                return "1" if result else "0"
    return e.strip('"')


def expand(text: str, lookup: Callable[[str], str]) -> str:
    """Substitute ``${NAME}``, ``${FUNC(args)}`` and ``$[expr]``, innermost first."""
    out: list[str] = []
    i = 0
    while i < len(text):
        two = text[i : i + 2]
        if two in ("${", "$["):
            end = _find_close(text, i)
            inner = expand(text[i + 2 : end], lookup)
            out.append(lookup(inner) if two == "${" else evaluate(inner))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def strftime(args: str) -> str:
    """STRFTIME(epoch,tz,format) for the formats the kit uses (%s, %3q)."""
    epoch_text, _, rest = args.partition(",")
    _, _, fmt = rest.partition(",")
    now = float(epoch_text) if epoch_text.strip() else time.time()
    fmt = fmt or "%c"
    fmt = fmt.replace("%s", str(int(now))).replace("%3q", f"{int(now * 1000) % 1000:03d}")
    return time.strftime(fmt, time.gmtime(now))


def truthy(value: str) -> bool:
    """Dialplan truth: not empty and not 0."""
    return value.strip() not in ("", "0")
