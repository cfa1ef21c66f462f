"""Shell-style `NAME="value"` files, read and never executed.

Operators and init scripts treat /etc/default files as shell; here they
are parsed: quotes removed as the shell would for a plain word, nothing
expanded or run. Each program declares its variables (`Variable`: the
attribute, the parser of its text, the default text); a value that does
not fit stops the start with the variable's name and where it came from
(file and line, or the environment, which overrides the file). An unknown
name close to a known one is an error (a typo would silently keep the
default); other unknown names are ignored (the file may be shared).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration value that the program cannot start with."""


@dataclasses.dataclass(frozen=True)
class Variable:
    """One configuration variable: its attribute, kind and default text."""

    attr: str
    parse: Callable[[str], Any]
    default: str


_ASSIGNMENT = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")


def parse_lines(text: str, source: str, known: Mapping[str, Variable]) -> dict[str, tuple[str, str]]:
    """Assignments of `known` names in a shell-style file: name -> (value, "source:line")."""
    found: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{source}:{number}"
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ASSIGNMENT.fullmatch(line)
        if not match:
            raise ConfigError(f'{where}: cannot read {raw!r} (expected NAME="value")')
        name, rest = match.groups()
        try:
            words = shlex.split(rest, comments=True, posix=True)
        except ValueError as exc:
            raise ConfigError(f"{where}: {name}: {exc}") from None
        if len(words) > 1:
            raise ConfigError(f"{where}: {name}: value has unquoted spaces")
        if name not in known:
            _reject_near_miss(name, where, known)
            continue
        found[name] = (words[0] if words else "", where)
    return found


def _reject_near_miss(name: str, where: str, known: Mapping[str, Variable]) -> None:
    by_lower = {name.lower(): name for name in known}
    close = difflib.get_close_matches(name.lower(), by_lower, n=1, cutoff=0.8)
    if close:
        raise ConfigError(f"{where}: unknown variable {name} (did you mean {by_lower[close[0]]}?)")


def read_values(path: str | None, default_path: str, known: Mapping[str, Variable],
                environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """The file's values, overridden by the environment's.

    A missing file at the default path is not an error (every variable has
    a default); a missing file that was named explicitly is.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, tuple[str, str]] = {}
    file_path = path or default_path
    try:
        with open(file_path, encoding="utf-8") as handle:
            values.update(parse_lines(handle.read(), file_path, known))
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(f"{file_path}: no such file") from None
    for name in known:
        if name in environ:
            values[name] = (environ[name], "environment")
    return values


def parse_values(values: Mapping[str, tuple[str, str]], known: Mapping[str, Variable]) -> tuple[dict, dict]:
    """(attribute -> parsed value, name -> origin) for every known variable,
    naming the variable and its origin when its text does not parse."""
    settings: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, var in known.items():
        text, where = values.get(name, (var.default, "default"))
        try:
            settings[var.attr] = var.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: {name}: {exc}") from None
        origins[name] = where
    return settings, origins
