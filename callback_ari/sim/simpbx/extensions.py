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
# The incoming route calls it as the README says: Gosub in place of Queue().
KIT_TEMPLATE = """
[{incoming}]
exten => {q},1,Gosub(callback-queue,{q},1())
 same => n,Hangup()
[callback-queue]
exten => {q},1,NoOp(callback-ari: caller ***${{CALLERID(num):-4}} enters queue ${{EXTEN}})
 same => n,ExecIf($["${{CB_QUEUE}}" != "${{EXTEN}}"]?Set(__CB_JOIN=))
 same => n,Set(__CB_QUEUE=${{EXTEN}})
 same => n,ExecIf($["${{CB_JOIN}}" = ""]?Set(__CB_JOIN=${{STRFTIME(,,%s%3q)}}))
 same => n,Set(CB_POSITION=${{ARG8}})
 same => n,Set(CB_DEADLINE=)
 same => n,ExecIf($["${{ARG4}}" != ""]?Set(CB_DEADLINE=$[${{EPOCH}} + ${{ARG4}}]))
 same => n,Set(CB_WAIT={timeout})
 same => n(wait),Answer()
 same => n,Set(CB_TIMEOUT=${{CB_WAIT}})
 same => n,GotoIf($["${{CB_DEADLINE}}" = ""]?join)
 same => n,Set(CB_LEFT=$[${{CB_DEADLINE}} - ${{EPOCH}}])
 same => n,GotoIf($[${{CB_LEFT}} <= 0]?expired)
 same => n,ExecIf($["${{CB_TIMEOUT}}" = "" | ${{CB_LEFT}} < 0${{CB_TIMEOUT}}]?Set(CB_TIMEOUT=${{CB_LEFT}}))
 same => n(join),Queue(${{EXTEN}},${{ARG1}},${{ARG2}},${{ARG3}},${{CB_TIMEOUT}},${{ARG5}},${{ARG6}},${{ARG7}},${{CB_POSITION}})
 same => n,GotoIf($["${{QUEUESTATUS}}" = "WITHDRAW"]?callback-offer,${{EXTEN}},withdraw)
 same => n,GotoIf($["${{QUEUESTATUS}}" != "TIMEOUT" | "${{CB_WAIT}}" = ""]?done)
 same => n,GotoIf($["${{CB_DEADLINE}}" = ""]?callback-offer,${{EXTEN}},timeout)
 same => n,GotoIf($[${{EPOCH}} < ${{CB_DEADLINE}}]?callback-offer,${{EXTEN}},timeout)
 same => n,Goto(done)
 same => n(expired),Set(QUEUESTATUS=TIMEOUT)
 same => n(done),NoOp(callback-ari: caller ***${{CALLERID(num):-4}} leaves ${{EXTEN}}: ${{QUEUESTATUS}})
 same => n,Return()
[callback-offer]
exten => {q},1(timeout),Set(CB_ENTRY=timeout)
 same => n,Goto(offer)
 same => n(withdraw),Set(CB_ENTRY=withdraw)
 same => n,Goto(offer)
 same => n(digit),Set(CB_ENTRY=digit)
 same => n(offer),Set(CB_RESULT=)
 same => n,Stasis({app},offer,${{EXTEN}},${{CB_ENTRY}},${{CB_JOIN}},${{QUEUEPOSITION}})
 same => n,GotoIf($["${{CB_RESULT}}" = "CALLBACK"]?callback)
 same => n,Set(CB_POSITION=${{QUEUEPOSITION}})
 same => n,Goto(callback-return,${{EXTEN}},1)
 same => n(callback),Set(QUEUESTATUS=CALLBACK)
 same => n,NoOp(callback-ari: caller ***${{CALLERID(num):-4}} leaves ${{EXTEN}}: CALLBACK)
 same => n,Return()
[callback-return]
exten => {q},1,NoOp(callback-ari: caller ***${{CALLERID(num):-4}} returns to ${{EXTEN}} at position ${{CB_POSITION}})
 same => n,Set(CB_WAIT=)
 same => n,Goto(callback-queue,${{EXTEN}},wait)
[callback-connect]
exten => {q},1,NoOp(callback-ari: callback ${{CB_ID}} joins ${{EXTEN}})
 same => n,Set(QUEUE_PRIO=${{IF($["${{CB_PRIO}}" = ""]?10:${{CB_PRIO}})}})
 same => n,Set(__CB_WHISPER=${{CB_WHISPER}})
 same => n,Set(__CB_RECORDING=${{CB_RECORDING}})
 same => n,Set(__CB_MARK=${{CB_ID}})
 same => n,Set(__CB_MARK_STAMP=${{CB_STAMP}})
 same => n,Queue(${{EXTEN}},,,,,,callback-whisper,,1)
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


_OPERATOR_LEVELS: tuple[tuple[str, ...], ...] = (
    ("|",),
    ("&",),
    ("!=", ">=", "<=", "=", ">", "<"),
    ("+", "-"),
    ("*", "/", "%"),
)
_ALL_OPERATORS = tuple(op for level in _OPERATOR_LEVELS for op in level)


def _last_operator(e: str, level: tuple[str, ...]) -> tuple[int, str] | None:
    """The right-most operator of ``level`` outside quotes (left associativity)."""
    found: tuple[int, str] | None = None
    in_quote = False
    previous = ""  # the last non-space character outside quotes: '' or an operator = unary
    i = 0
    while i < len(e):
        c = e[i]
        if c == '"':
            in_quote = not in_quote
            previous = '"'
            i += 1
            continue
        if in_quote or c.isspace():
            i += 1
            continue
        op = next((o for o in _ALL_OPERATORS if e.startswith(o, i)), None)
        if op is None:
            previous = c
            i += 1
            continue
        unary = op == "-" and (previous == "" or previous in "|&!=<>+-*/%")
        if op in level and not unary:
            found = (i, op)
        previous = op[-1]
        i += len(op)
    return found


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def evaluate(expr: str) -> str:
    """``$[...]``: ``| &``, comparisons (= != < > <= >=) and ``+ - * / %``, as ast_expr."""
    e = expr.strip()
    for level in _OPERATOR_LEVELS:
        hit = _last_operator(e, level)
        if hit is None:
            continue
        i, op = hit
        a, b = evaluate(e[:i]), evaluate(e[i + len(op) :])
        if op == "|":
            return a if truthy(a) else b
        if op == "&":
            return a if truthy(a) and truthy(b) else "0"
        x, y = _number(a), _number(b)
        if op in ("+", "-", "*", "/", "%"):
            if x is None or y is None:
                return "0"  # Asterisk warns "non-numeric argument" and uses 0
            value = {"+": x + y, "-": x - y, "*": x * y}.get(op)
            if value is None:
                if y == 0:
                    return "0"
                value = int(x / y) if op == "/" else x % y
            return str(int(value)) if float(value).is_integer() else str(value)
        left: int | float | str = a if x is None or y is None else x
        right: int | float | str = b if x is None or y is None else y
        result = {
            "!=": left != right,
            ">=": left >= right,  # type: ignore[operator]
            "<=": left <= right,  # type: ignore[operator]
            "=": left == right,
            ">": left > right,  # type: ignore[operator]
            "<": left < right,  # type: ignore[operator]
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
