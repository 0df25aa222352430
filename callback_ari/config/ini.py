"""Asterisk's config file syntax: comments, ``#include``/``#tryinclude`` and section templates.

What Asterisk's own config files accept, read the way ``main/config.c`` reads them:

- ``;`` starts a comment anywhere (``\\;`` is a literal semicolon), ``;-- ... --;`` is a block
  comment, any other line starting with ``#`` is a comment; ``key => value`` is ``key = value``;
  keys are case-insensitive.
- ``#include file`` (also ``"file"`` or ``<file>``) reads another file at that point: a relative
  name is relative to the main file's folder (Asterisk: /etc/asterisk), wildcards include every
  match in name order, and the included file continues the section it was included in.
  ``#tryinclude`` is the same but a missing file is no problem. ``#exec`` is refused.
- ``[base](!)`` is a template: it is not a section itself. ``[queue:sales](base)`` starts with
  every line of ``base``; ``(a,b)`` takes ``a`` then ``b`` (a later template's value replaces an
  earlier one's), and the section's own lines replace what the templates gave. A template can
  inherit (``[eu](!,base)``) and any earlier section can serve as one. ``[queue:sales](+)`` adds
  to a section defined earlier, like writing the header again.

Every problem names the file and line (``queues.d/sales.conf:4``).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field, replace
from pathlib import Path

from callback_ari.config.schema import QUEUE_PREFIX
from callback_ari.errors import ConfigProblem


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``key = value`` line; ``section`` is normalised ("general", "queue:support").

    ``template`` names the template the line was inherited from ("" for the section's own).
    """

    section: str
    key: str
    value: str
    line: int
    file: str = ""
    template: str = ""

    @property
    def where(self) -> str:
        """``file:line`` (``line N`` for text that came from no file)."""
        return where(self.file, self.line)


def where(file: str, line: int) -> str:
    return f"{file}:{line}" if file else f"line {line}"


def section_id(header: str) -> str:
    """Normalise a section header: fixed names lower-cased, ``queue:`` prefix case-insensitive."""
    name = header.strip()
    if name.lower().startswith(QUEUE_PREFIX):
        return QUEUE_PREFIX + name[len(QUEUE_PREFIX) :].strip()
    return name.lower()


@dataclass
class _Reading:
    """What has been read so far, across every included file."""

    base: Path  # relative #include names start here
    sections: list[str] = field(default_factory=list)  # real sections, in order
    lines: dict[str, list[Entry]] = field(default_factory=dict)  # every category, templates too
    templates: set[str] = field(default_factory=set)
    problems: list[ConfigProblem] = field(default_factory=list)
    stack: list[Path] = field(default_factory=list)  # the files being read, for include loops


def read_ini(text: str) -> tuple[list[Entry], list[str], list[ConfigProblem]]:
    """Parse config text with no file behind it (includes are relative to the working folder)."""
    reading = _Reading(Path.cwd())
    _read_text(reading, text, "", "")
    return _result(reading)


def read_ini_file(path: Path) -> tuple[list[Entry], list[str], list[ConfigProblem]]:
    """Parse a config file and everything it includes.

    The file itself must be readable (the caller reports that); problems inside it and in its
    includes come back as ConfigProblems naming file:line.
    """
    reading = _Reading(path.parent)
    reading.stack.append(path.resolve())
    _read_text(reading, path.read_text(encoding="utf-8"), str(path), "")
    return _result(reading)


def _result(reading: _Reading) -> tuple[list[Entry], list[str], list[ConfigProblem]]:
    entries = [e for s in reading.sections for e in reading.lines[s]]
    return entries, reading.sections, reading.problems


def _read_text(reading: _Reading, text: str, file: str, current: str) -> None:
    """Read one file's lines into ``reading``, starting in section ``current``."""
    in_block = False
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        at = where(file, lineno)
        line = raw_line
        if in_block:
            end = line.find("--;")
            if end < 0:
                continue
            line, in_block = line[end + 3 :], False
        start = line.find(";--")
        if start >= 0:
            end = line.find("--;", start + 3)
            if end < 0:
                line, in_block = line[:start], True
            else:
                line = line[:start] + line[end + 3 :]
        line = _strip_comment(line).strip()
        if not line:
            continue
        if line.startswith("#"):
            _directive(reading, line, at, current)
            continue
        if line.startswith("["):
            current = _header(reading, line, at, current)
            continue
        key, sep, value = _split_assignment(line)
        if not sep or not key:
            problem = ConfigProblem(current or "file", at, "expected 'key = value'", line)
            reading.problems.append(problem)
        elif not current:
            reading.problems.append(ConfigProblem("file", key, f"{at} is before any [section]"))
        elif current != "!invalid":
            reading.lines[current].append(Entry(current, key, value, lineno, file))


def _directive(reading: _Reading, line: str, at: str, current: str) -> None:
    """``#include``, ``#tryinclude``; ``#exec`` is refused; any other ``#`` line is a comment."""
    word, _, rest = line.partition(" ")
    word = word.lower()
    section = current if current and current != "!invalid" else "file"
    if word == "#exec":
        reading.problems.append(ConfigProblem(section, at, "#exec is not supported (use #include)"))
        return
    if word not in ("#include", "#tryinclude"):
        return  # a comment
    name = rest.strip().strip('"').removeprefix("<").removesuffix(">").strip()
    if not name:
        reading.problems.append(ConfigProblem(section, at, f"{word} needs a file name"))
        return
    target = Path(name) if Path(name).is_absolute() else reading.base / name
    if glob.has_magic(str(target)):
        files = [Path(p) for p in sorted(glob.glob(str(target)))]
        if not files and word == "#include":
            msg = f"#include {name}: no file matches"
            reading.problems.append(ConfigProblem(section, at, msg))
    else:
        files = [target]
    for path in files:
        _include(reading, path, name, word, at, current)


def _include(reading: _Reading, path: Path, name: str, word: str, at: str, current: str) -> None:
    section = current if current and current != "!invalid" else "file"
    resolved = path.resolve()
    if resolved in reading.stack:
        loop = " -> ".join(p.name for p in [*reading.stack, resolved])
        reading.problems.append(
            ConfigProblem(section, at, f"{word} {name}: includes itself ({loop})")
        )
        return
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if word == "#include":
            reading.problems.append(ConfigProblem(section, at, f"#include {name}: no such file"))
        return
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        reading.problems.append(ConfigProblem(section, at, f"{word} {name}: cannot read: {reason}"))
        return
    reading.stack.append(resolved)
    try:
        # The included file continues the includer's section; the includer resumes it after.
        _read_text(reading, text, str(path), current)
    finally:
        reading.stack.pop()


def _header(reading: _Reading, line: str, at: str, current: str) -> str:
    """Start a section (or template) from ``[name]`` / ``[name](options)``; the new current."""
    close = line.find("]")
    header = line[1:close] if close > 0 else ""
    rest = line[close + 1 :].strip() if close > 0 else ""
    options: list[str] = []
    if rest:
        if rest.startswith("(") and rest.endswith(")"):
            options = [o.strip() for o in rest[1:-1].split(",") if o.strip()]
        else:
            rest = "?"  # text after the header that is not (options)
    if close < 0 or rest == "?" or not header.strip():
        problem = ConfigProblem(current or "file", at, "bad section header", line)
        reading.problems.append(problem)
        return "!invalid"
    name = section_id(header)
    is_template = "!" in options
    parents = [section_id(o) for o in options if o not in ("!", "+")]
    if name in reading.lines and not parents:
        if is_template != (name in reading.templates):
            msg = "is a template in one header and a section in another"
            reading.problems.append(ConfigProblem(name, at, msg))
        return name  # written again (or with (+)): more lines for the same section
    lines = reading.lines.setdefault(name, [])
    if is_template:
        reading.templates.add(name)
    elif name not in reading.sections:
        reading.sections.append(name)
    for parent in parents:
        if parent == name or parent not in reading.lines:
            known = ", ".join(sorted(reading.templates)) or "none defined before this line"
            msg = f"inherits from unknown template '{parent}' (templates: {known})"
            reading.problems.append(ConfigProblem(name, at, msg))
            continue
        for e in reading.lines[parent]:
            # Nested templates keep the name of the template the line was written in.
            lines.append(replace(e, section=name, template=e.template or parent))
    return name


def _strip_comment(line: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and line[i + 1 : i + 2] == ";":
            out.append(";")
            i += 2
            continue
        if c == ";":
            break
        out.append(c)
        i += 1
    return "".join(out)


def _split_assignment(line: str) -> tuple[str, str, str]:
    eq = line.find("=")
    if eq < 0:
        return "", "", ""
    key = line[:eq].strip().lower()
    value = line[eq + 1 :]
    if value.startswith(">"):  # Asterisk's "key => value"
        value = value[1:]
    return key, "=", value.strip()
