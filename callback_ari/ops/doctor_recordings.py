"""``callback-ari check`` for the recorded message: Asterisk can store and list recordings.

Run only when a queue has ``record_message``. ARI's ``GET /recordings/stored`` must answer
(Asterisk 22 answers 500 "Allocation failed" when ``astspooldir/recording`` is missing, and
then ``POST /channels/{id}/record`` fails too). When the service runs on the Asterisk host
(``recording_dir``'s parent, Asterisk's spool, exists here) the directory must also exist and
be writable by the user that owns the spool, the one Asterisk runs as.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from callback_ari.asterisk.ari import AriClient
from callback_ari.config.loader import Config
from callback_ari.errors import AriError

# check name, status ("pass" | "warn" | "fail"), detail, fix
Report = Callable[[str, str, str, str], None]
CHECK = "ari.recordings"


def _fix(directory: str, owner: str) -> str:
    return (
        f"create Asterisk's recordings directory: install -d -o {owner} -g {owner} {directory} "
        "(astspooldir/recording; Debian's package has none), or set record_message = 0"
    )


def writable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether a process of ``uid``/``gid`` may create files in the directory ``path``."""
    st = path.stat()
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR and st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IWGRP and st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IWOTH and st.st_mode & stat.S_IXOTH)


def _owner(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


async def check_recordings(ari: AriClient, config: Config, report: Report) -> None:
    """Add the recordings findings through ``report``; nothing when no queue records."""
    queues = sorted(q.name for q in config.queues.values() if q.record_message > 0)
    if not queues:
        return
    directory = config.general.recording_dir
    try:
        names = await ari.stored_recordings()
    except AriError as exc:
        report(CHECK, "fail", f"ARI cannot list stored recordings ({exc}); record_message in "
               f"{', '.join(queues)} cannot record", _fix(directory, "asterisk"))  # fmt: skip
        return
    report(CHECK, "pass", f"ARI lists stored recordings ({len(names)} now)", "")
    check_directory(directory, report)


def check_directory(directory: str, report: Report) -> None:
    """On the Asterisk host (its spool, the directory's parent, exists here): the directory
    exists and the spool's owner, the user Asterisk runs as, may write to it."""
    local, spool = Path(directory), Path(directory).parent
    if not spool.is_dir():
        return  # not on the Asterisk host: ARI's answer is all we can see
    owner_uid, owner_gid = spool.stat().st_uid, spool.stat().st_gid
    owner = _owner(owner_uid)
    if not local.is_dir():
        report(CHECK + ".dir", "fail", f"{directory} does not exist",
               _fix(directory, owner))  # fmt: skip
    elif not writable_by(local, owner_uid, owner_gid):
        report(CHECK + ".dir", "fail", f"{directory} is not writable by {owner} (Asterisk)",
               f"chown {owner}:{owner} {directory}; chmod 0750 {directory}")  # fmt: skip
    else:
        report(CHECK + ".dir", "pass", f"{directory} is writable by {owner} (Asterisk)", "")
