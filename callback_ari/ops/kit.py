"""The dialplan kit and the example config as package data, so a pip install carries them.

``callback_ari/dialplan`` is a symlink to the repository's ``dialplan/`` folder: the files an
administrator reads in a checkout are the very files the wheel ships (no second copy to drift).
The kit is every ``*.conf`` and ``*.service`` file directly in that folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

KIT_SUFFIXES = (".conf", ".service")
SAMPLE_CONFIG = "callback_ari.conf"


def kit_files() -> dict[str, bytes]:
    """``{file name: content}`` of every kit file, sorted by name."""
    folder: Traversable = resources.files("callback_ari") / "dialplan"
    found = {
        item.name: item.read_bytes()
        for item in folder.iterdir()
        if item.is_file() and item.name.endswith(KIT_SUFFIXES)
    }
    return dict(sorted(found.items()))


def sample_config() -> str:
    """The fully commented example ``callback_ari.conf``."""
    return kit_files()[SAMPLE_CONFIG].decode("utf-8")


@dataclass(frozen=True, slots=True)
class Written:
    """What ``write_kit`` did with one file: ``written``, ``unchanged`` or ``dist``."""

    path: Path
    action: str


def write_kit(dest: Path, *, force: bool = False) -> list[Written]:
    """Write the kit into ``dest`` (created if missing).

    A file that exists with other content is the administrator's: it is kept and the kit's
    version is written beside it as ``NAME.dist`` (``force`` overwrites instead).
    """
    dest.mkdir(parents=True, exist_ok=True)
    done: list[Written] = []
    for name, content in kit_files().items():
        target = dest / name
        if target.exists() and target.read_bytes() == content:
            done.append(Written(target, "unchanged"))
            continue
        if target.exists() and not force:
            target = dest / (name + ".dist")
            action = "dist"
        else:
            action = "written"
        target.write_bytes(content)
        target.chmod(0o644)
        done.append(Written(target, action))
    return done
