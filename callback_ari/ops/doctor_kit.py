"""The dialplan kit's own contexts, and ``callback-ari check``'s look at whether it is current.

The service never names the kit's contexts (``[queue:X]`` keys name the ones it continues
into); ``check`` does, to tell an administrator what is missing. A kit from before the crash
mark (``CB_REACHED_<id>``, ``service/attempt.py``) keeps working, but a customer who talked to
an agent while the instance that dialled them was killed may be called again: a warning, with
the lines to copy.
"""

from __future__ import annotations

from collections.abc import Callable

from callback_ari.asterisk.ami import AmiClient
from callback_ari.config.loader import Config
from callback_ari.errors import AmiActionError
from callback_ari.service.attempt import REACHED_VAR_PREFIX

KIT_QUEUE_CONTEXT = "callback-queue"
KIT_OFFER_CONTEXT = "callback-offer"
KIT_EXIT_CONTEXT = "callback-exit"
KIT_WHISPER_CONTEXT = "callback-whisper"  # Queue()'s member gosub: the whisper, the mark
KIT_AGENT_CONFIRM_CONTEXT = "callback-agent-confirm"  # agent-first: Dial's U() "press 1"
MARK_HANDOVER = "__CB_MARK="  # [callback-connect] hands the callback's id to the member
CHECK = "dialplan.reached_mark"

# check name, status ("pass" | "warn" | "fail"), detail, fix
Report = Callable[[str, str, str, str], None]


def marking_places(cfg: Config) -> dict[tuple[str, str], str]:
    """(context, extension) -> the text its priorities must contain to mark a callback."""
    places: dict[tuple[str, str], str] = {}
    for q in cfg.queues.values():
        if q.dialing_mode == "agent_first":
            places[(KIT_AGENT_CONFIRM_CONTEXT, "s")] = REACHED_VAR_PREFIX
        else:
            places[(q.connect_context, q.name)] = MARK_HANDOVER
            places[(KIT_WHISPER_CONTEXT, "s")] = REACHED_VAR_PREFIX
    return places


async def check_reached_mark(ami: AmiClient, cfg: Config, report: Report) -> None:
    """Warn when a context of the kit lacks its crash-mark lines (a kit from before them)."""
    old = []
    for (context, exten), needle in marking_places(cfg).items():
        try:
            items = await ami.show_dialplan(context, exten)
        except AmiActionError:
            continue  # a missing context or extension is the contexts check's finding
        if not any(needle in (item.get("AppData") or "") for item in items):
            old.append(f"{exten}@{context}")
    if old:
        report(
            CHECK,
            "warn",
            f"{', '.join(old)} predate(s) the crash mark: a customer who talked to an agent "
            "while the instance that dialled them was killed may be called again",
            "copy [callback-connect], [callback-whisper] and [callback-agent-confirm] from the "
            "current extensions_callback.conf, then `dialplan reload`",
        )
    else:
        mark = f"{REACHED_VAR_PREFIX}<id>"
        report(CHECK, "pass", f"the kit marks callbacks that reached an agent ({mark})", "")
