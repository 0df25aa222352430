"""How a dial attempt ended: Asterisk's dial status and hangup cause mapped to an Outcome.

Asterisk reports an originated call's fate in two places: the final ``Dial`` event's
``dialstatus`` and the Q.850 ``cause`` of ``ChannelDestroyed``. Neither is enough alone,
and Local channels differ from SIP/PJSIP (recorded on Asterisk 22, transcripts README fact 13):

====================  ===================  ===============  ===============  ==============
Local outcome         final dialstatus     ;1 destroyed     ;2 destroyed     Outcome
====================  ===================  ===============  ===============  ==============
answered              ANSWER               --               --               (see below)
answered, no "1"      CONTINUE (DialEnd)   --               --               not_confirmed
busy                  BUSY                 0 Unknown        17 User busy     busy
congestion            CONGESTION           0 Unknown        34 congestion    congestion
no answer (timeout)   none (only ``""``)   19               19               no_answer
invalid extension     no Dial at all       0 Unknown        0 Unknown        rejected
====================  ===================  ===============  ===============  ==============

The caller passes the most telling cause (a non-zero one from either half if there is one).

Agent-first (``[callback-agent-first]``): Dial's ``U()`` gosub plays the "press 1" to the
answered customer before the bridge and, without a 1, leaves ``GOSUB_RESULT=CONTINUE``.
Asterisk 22 then hangs the customer up and reports AMI ``DialEnd`` with ``DialStatus:
CONTINUE`` (the agent's ``DIALSTATUS`` variable stays ``ANSWER``; recorded on the sandbox PBX),
so CONTINUE means answered and not confirmed; a customer who hung up during the prompt gives
the same DialEnd, so agent-first counts them not_confirmed too, not hangup. ``ABORT``
(DialEnd ``ABORT``; it hangs the agent up too, without a word, so the kit does not use it)
means the same.

Rules, in order:

1. Answered (``answered`` or dialstatus ANSWER, CONTINUE or ABORT): ``confirmed`` -> connected;
   otherwise ``cause is None`` (the call is still up: nobody pressed 1 before the confirm
   timeout, so we end it) -> not_confirmed; a cause (the far end hung up first) -> hangup.
2. A dial status that says it all: BUSY -> busy; NOANSWER, CANCEL -> no_answer;
   DONTCALL, TORTURE (privacy manager refusals) -> rejected; INVALIDARGS -> error (our dial
   string is wrong).
3. CONGESTION and CHANUNAVAIL are generic: a cause in the table below refines them (SIP 404
   arrives as CHANUNAVAIL/1 -> rejected); without one, or with 16 (normal clearing says
   nothing about a failure), they mean congestion.
4. No dial status: the cause decides. Local with cause 0 is an invalid extension -> rejected;
   any other technology with cause 0/None tells us nothing -> error.

====================================  ===================================================
Q.850 cause                           Outcome
====================================  ===================================================
16 normal clearing (before answer)    no_answer
17                                    busy
18, 19, 20, 31, 102                   no_answer
1, 2, 3, 21, 22, 28, 88               rejected (unallocated, no route, rejected, changed,
                                      bad format, incompatible)
27 destination out of order           congestion: an equipment fault on the far side is
                                      temporary, not a verdict on the number
34, 38, 41, 42, 44, 47, 127           congestion
66 channel type not implemented       error (the dial template names a missing driver)
other                                 by Q.850 class: 1-31 no_answer, 32-47 congestion,
                                      48 and up rejected
====================================  ===================================================
"""

from __future__ import annotations

from types import MappingProxyType

from callback_ari.models import Outcome

#: Asterisk's ``cause_txt`` for the Q.850 causes this module names (main/channel.c).
Q850: MappingProxyType[int, str] = MappingProxyType(
    {
        0: "Unknown",
        1: "Unallocated (unassigned) number",
        2: "No route to specified transmit network",
        3: "No route to destination",
        16: "Normal Clearing",
        17: "User busy",
        18: "No user responding",
        19: "User alerting, no answer",
        20: "Subscriber absent",
        21: "Call Rejected",
        22: "Number changed",
        27: "Destination out of order",
        28: "Invalid number format",
        31: "Normal, unspecified",
        34: "Circuit/channel congestion",
        38: "Network out of order",
        41: "Temporary failure",
        42: "Switching equipment congestion",
        44: "Requested channel not available",
        47: "Resource unavailable, unspecified",
        66: "Channel not implemented",
        88: "Incompatible destination",
        102: "Recovery on timer expiry",
        127: "Interworking, unspecified",
    }
)

_BY_CAUSE: MappingProxyType[int, Outcome] = MappingProxyType(
    {
        16: Outcome.NO_ANSWER,
        17: Outcome.BUSY,
        18: Outcome.NO_ANSWER,
        19: Outcome.NO_ANSWER,
        20: Outcome.NO_ANSWER,
        31: Outcome.NO_ANSWER,
        102: Outcome.NO_ANSWER,
        1: Outcome.REJECTED,
        2: Outcome.REJECTED,
        3: Outcome.REJECTED,
        21: Outcome.REJECTED,
        22: Outcome.REJECTED,
        28: Outcome.REJECTED,
        88: Outcome.REJECTED,
        27: Outcome.CONGESTION,
        34: Outcome.CONGESTION,
        38: Outcome.CONGESTION,
        41: Outcome.CONGESTION,
        42: Outcome.CONGESTION,
        44: Outcome.CONGESTION,
        47: Outcome.CONGESTION,
        127: Outcome.CONGESTION,
        66: Outcome.ERROR,
    }
)

_BY_DIALSTATUS: MappingProxyType[str, Outcome] = MappingProxyType(
    {
        "BUSY": Outcome.BUSY,
        "NOANSWER": Outcome.NO_ANSWER,
        "CANCEL": Outcome.NO_ANSWER,
        "DONTCALL": Outcome.REJECTED,
        "TORTURE": Outcome.REJECTED,
        "INVALIDARGS": Outcome.ERROR,
    }
)

NORMAL_CLEARING = 16
_ANSWERED = frozenset({"ANSWER", "CONTINUE", "ABORT"})  # agent-first U(): answered, no "1"
_GENERIC_DIALSTATUS = frozenset({"CONGESTION", "CHANUNAVAIL"})


def _by_cause(cause: int) -> Outcome:
    known = _BY_CAUSE.get(cause)
    if known is not None:
        return known
    if cause <= 31:
        return Outcome.NO_ANSWER
    if cause <= 47:
        return Outcome.CONGESTION
    return Outcome.REJECTED


def classify(
    *,
    dialstatus: str | None,
    cause: int | None,
    answered: bool,
    confirmed: bool,
    technology: str,
) -> Outcome:
    """The Outcome of one attempt (rules and tables in the module docstring)."""
    status = (dialstatus or "").strip().upper()
    if answered or status in _ANSWERED:
        if confirmed:
            return Outcome.CONNECTED
        return Outcome.NOT_CONFIRMED if cause is None else Outcome.HANGUP
    decided = _BY_DIALSTATUS.get(status)
    if decided is not None:
        return decided
    if status in _GENERIC_DIALSTATUS:
        if cause and cause != NORMAL_CLEARING:
            return _BY_CAUSE.get(cause, Outcome.CONGESTION)
        return Outcome.CONGESTION
    if cause:
        return _by_cause(cause)
    if technology.strip().upper() == "LOCAL" and cause == 0:
        return Outcome.REJECTED  # no Dial events, both halves cause 0: no such extension
    return Outcome.ERROR


def describe(dialstatus: str | None, cause: int | None, cause_txt: str | None) -> str:
    """The record's ``last_cause``: ``"BUSY/17 User busy"``; ``-`` marks what is unknown."""
    status = (dialstatus or "").strip().upper() or "-"
    if cause is None:
        return f"{status}/-"
    text = (cause_txt or "").strip() or Q850.get(cause, "")
    return f"{status}/{cause} {text}".rstrip()
