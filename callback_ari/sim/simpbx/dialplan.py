"""The emulated dialplan: runs extensions priority by priority on a channel, like pbx.c."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Final

import structlog

from callback_ari.sim.simpbx import customers
from callback_ari.sim.simpbx.extensions import (
    EXIT_TEMPLATE,
    KIT_TEMPLATE,
    Contexts,
    Extension,
    expand,
    parse,
    pattern_match,
    split_app,
    strftime,
    truthy,
)
from callback_ari.sim.simpbx.model import CallerId, Channel, GosubFrame
from callback_ari.sim.simpbx.pbx import Pbx
from callback_ari.sim.simpbx.sounds import media_duration

log = structlog.get_logger(__name__)

STOP: Final = "stop"
Jump = tuple[str, str, int]
# ${NAME:offset} / ${NAME:offset:length} after a variable or a function's closing parenthesis
_SUBSTRING = re.compile(r"^(.*?(?:\)|[\w.]))((?::-?\d*){1,2})$")


class FunctionError(Exception):
    """A dialplan function that cannot be read (unknown name)."""


class Dialplan:
    """Contexts of the fake plus synthetic [customers] extensions chosen by number behaviour."""

    def __init__(self, pbx: Pbx, *, app: str, incoming_context: str) -> None:
        self.pbx = pbx
        self.app = app
        self.incoming_context = incoming_context
        self.contexts: Contexts = {}
        self.behaviours = customers.Behaviours()
        self._programs: dict[str, Extension] = {}

    # --- definition ----------------------------------------------------------------------

    def load(self, text: str) -> None:
        """Merge extensions.conf text (a re-defined extension replaces the earlier one)."""
        parse(text, self.contexts, self.pbx.globals)

    def add_queue_kit(self, queue: str, timeout: int | None, exit_digit: str | None) -> None:
        """The project's dialplan kit for one queue (incoming, callback-* contexts)."""
        self.load(
            KIT_TEMPLATE.format(
                incoming=self.incoming_context,
                q=queue,
                app=self.app,
                timeout="" if timeout is None else timeout,
            )
        )
        for digit in exit_digit or "":
            self.load(EXIT_TEMPLATE.format(digit=digit))

    def find(self, context: str, exten: str, ch: Channel | None = None) -> Extension | None:
        """The extension to run; contexts not defined play the number's behaviour."""
        ctx = self.contexts.get(context)
        if ctx is None:
            if ch is None:
                return None
            return self._programs.get(ch.id)
        ext = ctx.get(exten)
        if ext is not None:
            return ext
        return next((e for name, e in ctx.items() if pattern_match(name, exten)), None)

    def exists(self, context: str, exten: str, ch: Channel | None = None) -> bool:
        """Would the call find the extension? Picks the behaviour of a dialled number."""
        if context not in self.contexts and ch is not None:
            behaviour = self.behaviours.resolve(exten)
            program = customers.PROGRAMS.get(behaviour)
            if program is None:
                return False
            ext = Extension(exten)
            for prio, (app, data) in enumerate(program, start=1):
                ext.add(prio, None, app, data)
            self._programs[ch.id] = ext
            return True
        return self.find(context, exten) is not None

    # --- expressions -----------------------------------------------------------------------

    def expand(self, ch: Channel | None, text: str) -> str:
        """Substitute variables, functions and expressions for a channel."""
        return expand(text, lambda name: self._lookup(ch, name))

    def _lookup(self, ch: Channel | None, name: str) -> str:
        m = _SUBSTRING.match(name)
        base, cut = (m.group(1), m.group(2)) if m else (name, "")
        try:
            value = self.read(ch, base)
        except FunctionError:
            return ""
        return _substring("" if value is None else value, cut)

    def read(self, ch: Channel | None, name: str) -> str | None:
        """A variable or function value; None when an ordinary variable is unset."""
        if name.endswith(")") and "(" in name:
            func, _, args = name[:-1].partition("(")
            return self._function(ch, func.strip().upper(), args)
        if ch is not None:
            if ch.gosub_stack and name in ch.gosub_stack[-1].locals:
                return ch.gosub_stack[-1].locals[name]
            if name in ch.variables:
                return ch.variables[name]
            builtin = {
                "EXTEN": ch.exten,
                "CONTEXT": ch.context,
                "PRIORITY": str(ch.priority),
                "UNIQUEID": ch.id,
                "CHANNEL": ch.name,
                "EPOCH": str(int(time.time())),
            }.get(name)
            if builtin is not None:
                return builtin
        return self.pbx.globals.get(name)

    def _function(self, ch: Channel | None, func: str, args: str) -> str:
        if func == "QUEUE_MEMBER":
            queue, _, option = args.partition(",")
            return self.pbx.queues.queue_member(queue.strip(), option.strip())
        if func == "IF":
            cond, _, branches = args.partition("?")
            yes, _, no = branches.partition(":")
            return yes if truthy(cond) else no
        if func == "STRFTIME":
            return strftime(args)
        if func == "LEN":
            return str(len(args))
        if func == "GLOBAL":
            return self.pbx.globals.get(args, "")
        if func == "CALLERID" and ch is not None:
            what = args.strip().lower()
            if what == "num":
                return ch.caller.number
            if what == "name":
                return ch.caller.name
            return f'"{ch.caller.name}" <{ch.caller.number}>'
        if func == "CHANNEL" and ch is not None:
            return {"name": ch.name, "state": ch.state, "uniqueid": ch.id}.get(args.strip(), "")
        raise FunctionError(func)

    def assign(self, ch: Channel, name: str, value: str) -> None:
        """Set(name=value), also for GLOBAL() and CALLERID()."""
        name = name.strip().lstrip("_")
        upper = name.upper()
        if upper.startswith("LOCAL(") and name.endswith(")") and ch.gosub_stack:
            ch.gosub_stack[-1].locals[name[6:-1]] = value
            return
        if upper.startswith("GLOBAL(") and name.endswith(")"):
            self.pbx.globals[name[7:-1]] = value
            return
        if upper.startswith("CALLERID(") and name.endswith(")"):
            what = name[9:-1].lower()
            old = ch.caller
            ch.caller = CallerId(value, old.number) if what == "name" else CallerId(old.name, value)
            return
        self.pbx.set_var(ch, name, value)

    # --- execution ---------------------------------------------------------------------------

    async def run(self, ch: Channel, context: str, exten: str, priority: int) -> None:
        """Run the dialplan on the channel until it hangs up or the dialplan ends."""
        ch.runner = asyncio.current_task()
        try:
            while ch.alive:
                ext = self.find(context, exten, ch)
                step = None if ext is None else ext.steps.get(priority)
                if step is None:
                    self.pbx.pbx_end(ch)
                    return
                ch.context, ch.exten, ch.priority = context, exten, priority
                data = self.expand(ch, step.data)
                ch.app_name, ch.app_data = step.app, data
                self.pbx.emit(
                    "ChannelDialplan", ch, {"dialplan_app": step.app, "dialplan_app_data": data}
                )
                jump = await self._exec(ch, step.app, data, ext)
                if jump == STOP:
                    return
                if jump is None:
                    priority += 1
                elif isinstance(jump, tuple):
                    context, exten, priority = jump
        except Exception:
            log.exception("simpbx.dialplan_failed", channel=ch.name)
            if ch.alive:
                self.pbx.hangup(ch, 16, soft=False)
        finally:
            if ch.runner is asyncio.current_task():
                ch.runner = None

    def _target(self, ch: Channel, text: str, ext: Extension | None) -> Jump | None:
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        if not parts:
            return None
        context, exten = ch.context, ch.exten
        if len(parts) == 3:
            context, exten, label = parts
        elif len(parts) == 2:
            exten, label = parts
        else:
            label = parts[0]
        if label.isdigit():
            return context, exten, int(label)
        target = (
            self.find(context, exten, ch) if (context, exten) != (ch.context, ch.exten) else ext
        )
        if target is None or label not in target.labels:
            log.warning("simpbx.no_such_label", context=context, exten=exten, label=label)
            return context, exten, 10_000
        return context, exten, target.labels[label]

    async def _exec(
        self, ch: Channel, app: str, data: str, ext: Extension | None
    ) -> Jump | str | None:
        pbx = self.pbx
        name = app.lower()
        if name == "answer":
            if ch.state != "Up":
                pbx.answer(ch)
                await pbx.sleep(0.5)
        elif name == "wait":
            await pbx.sleep(float(data or 0))
        elif name == "set":
            var, _, value = data.partition("=")
            self.assign(ch, var, value)
        elif name == "execif":
            cond, _, apps = data.partition("?")
            yes, _, no = apps.partition(":")
            chosen = yes if truthy(cond) else no
            if chosen:
                inner, inner_data = split_app(chosen)
                return await self._exec(ch, inner, inner_data, ext)
        elif name == "gotoif":
            cond, _, labels = data.partition("?")
            yes, _, no = labels.partition(":")
            return self._target(ch, yes if truthy(cond) else no, ext)
        elif name == "goto":
            return self._target(ch, data, ext)
        elif name == "gosub":
            return self._gosub(ch, data, ext)
        elif name == "return":
            if not ch.gosub_stack:
                log.warning("simpbx.return_without_gosub", channel=ch.name)
                pbx.pbx_end(ch)
                return STOP
            frame = ch.gosub_stack.pop()
            pbx.set_var(ch, "GOSUB_RETVAL", data)
            return frame.back
        elif name == "queue":
            return await self._queue(ch, data)
        elif name == "stasis":
            return await self._stasis(ch, data)
        elif name == "hangup":
            if data.strip().isdigit():
                ch.hangupcause = ch.hangupcause or int(data)
            pbx.pbx_end(ch)
            return STOP
        elif name in ("busy", "congestion"):
            pbx.set_state(ch, "Busy")
            status, cause = ("BUSY", 17) if name == "busy" else ("CONGESTION", 34)
            pbx.dial_failed(ch, status, cause)
            if ch.alive:
                await pbx.sleep(float(data or 0))
                pbx.pbx_end(ch)
            return STOP
        elif name == "senddtmf":
            for digit in data.split(",", 1)[0]:
                await pbx.sleep(0.2)
                if ch.peer is not None:
                    pbx.media.dtmf_received(ch.peer, digit, 100)
            await pbx.sleep(0.25)
        elif name == "userevent":
            self._user_event(ch, data)
        elif name in ("echo", "musiconhold"):
            await asyncio.get_running_loop().create_future()
        elif name == "playback":
            await pbx.sleep(sum(media_duration(f"sound:{f}") or 0.0 for f in data.split("&")))
        elif name not in ("noop", "verbose", "log", "ringing", "progress"):
            log.warning("simpbx.unknown_app", app=app)
        return None

    def _gosub(self, ch: Channel, data: str, ext: Extension | None) -> Jump | None:
        """Gosub([[context,]exten,]priority(arg1,...)): push a frame, jump; ARGn are LOCAL."""
        target, _, args = data.partition("(")
        args = args[: args.rfind(")")] if ")" in args else args
        jump = self._target(ch, target, ext)
        if jump is None:
            return None
        values = args.split(",") if args else []
        previous = len(ch.gosub_stack[-1].locals) if ch.gosub_stack else 0
        local = {f"ARG{n}": "" for n in range(1, previous + 1)}  # an outer ARGn never leaks in
        local |= {f"ARG{n}": v for n, v in enumerate(values, start=1)}
        ch.gosub_stack.append(GosubFrame((ch.context, ch.exten, ch.priority + 1), local))
        return jump

    async def _queue(self, ch: Channel, data: str) -> Jump | str | None:
        result = await self.pbx.queues.run_queue(ch, data.split(","))
        if isinstance(result, tuple):
            return result[1], result[2], 1
        if result == "HANGUP":
            self.pbx.pbx_end(ch)
            return STOP
        if result == "CONTINUE":
            self.pbx.set_var(ch, "QUEUESTATUS", "CONTINUE")
        return None

    async def _stasis(self, ch: Channel, data: str) -> Jump | str | None:
        app, *args = data.split(",")
        if not self.pbx.enter_stasis(ch, app, args, from_dialplan=True):
            return None
        if ch.stasis_done is not None:
            await asyncio.shield(ch.stasis_done)
        if not ch.alive:
            return STOP
        target, ch.continue_to = ch.continue_to, None
        return target

    def _user_event(self, ch: Channel, data: str) -> None:
        event, *pairs = data.split(",")
        body: dict[str, str] = {"eventname": event}
        for pair in pairs:
            key, _, value = pair.partition(":")
            body[key.strip()] = value.strip()
        self.pbx.emit("ChannelUserevent", ch, {"eventname": event, "userevent": body})
        fields = [*self.pbx.ami_channel_fields(ch), ("UserEvent", event)]
        fields += [(k, v) for k, v in body.items() if k != "eventname"]
        self.pbx.ami("UserEvent", "user,all", fields)


def _substring(value: str, cut: str) -> str:
    """``${VAR:offset:length}`` as Asterisk: negative offset from the end, negative length
    leaves that many off the end."""
    if not cut:
        return value
    parts = cut[1:].split(":")
    offset = int(parts[0] or 0)
    start = max(0, len(value) + offset) if offset < 0 else min(offset, len(value))
    rest = value[start:]
    if len(parts) < 2 or parts[1] == "":
        return rest
    length = int(parts[1])
    return rest[:length] if length >= 0 else rest[: max(0, len(rest) + length)]
