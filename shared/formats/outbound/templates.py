"""Outbound file names made by a destination's template: the platform's file-name macros.

The platform lets each destination configure how its files are named, with the macros of its "Outbound
Template Macros" page (``<SYNC_TYPE>_<ORDER_ID>_<DPID>_<SYNC_MODE>_<TIMESTAMP>SPLITNUM.sync``, as its macro
examples write them). A :class:`NameTemplate` is one such template, parsed once (a bad one is refused at
start) and then used both ways: a name matched into its fields, fields rendered into a name.

The language, as the documentation writes it:

* ``<MACRO>`` for ``SYNC_TYPE``, ``ORDER_ID`` (the file-name page calls it ``DID``), ``DPID``,
  ``MASTER_DPID``, ``PID_ALIAS`` (``PIDALIAS``), ``SYNC_MODE`` and ``TIMESTAMP``. ``<TIMESTAMP>`` is the
  macro page's 10-digit UTC Unix time in seconds; ``<TIMESTAMP; unit="ms">`` the 13-digit milliseconds of the
  file-name page. (Java date formats, ``format="..."``, are refused: nothing says how they break ties.)
* ``SPLITNUM`` (no ``<>`` needed): the part number, zero-padded to at least 3 digits or ``-N`` (the
  ``.info`` page's style); right before the extension, and implied there when left out. An unsplit batch's
  names have none.
* ``[...]``: an element a file name may or may not carry (the documentation's brackets), e.g.
  ``[_<PID_ALIAS>]``; at most three.
* anything else is literal: ASCII letters, digits, ``_``, ``-`` and ``.``. The extension is the last literal
  from its first ``.`` on (``.sync`` when the template ends without one); ``.gz`` after it is always
  optional (gzip is a delivery option, not a name).

A template must name ``SYNC_MODE`` and ``TIMESTAMP`` (what a batch is, and what tells one batch from the
next), and be readable one way only: a field whose length varies must be followed by a character it cannot
contain (``<ORDER_ID><DPID>`` is refused). The documented default,
``[SYNC_TYPE][_DID][_MASTER_DPID][_PID_ALIAS][_SYNC_MODE][_TIMESTAMP]SPLITNUM.sync[.gz]``, is read by
:mod:`.names` itself, with its finer error messages; ``DEFAULT_TEMPLATE_TEXTS`` are its spellings.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from shared.errors import ConfigError
from shared.formats import BadFileName
from shared.formats.fields import MAX_ID

TimestampUnit = Literal["s", "ms"]

DEFAULT_TEMPLATE_TEXTS: Final = frozenset(
    {
        "[SYNC_TYPE][_DID][_MASTER_DPID][_PID_ALIAS][_SYNC_MODE][_TIMESTAMP]SPLITNUM.sync[.gz]",
        "[SYNC_TYPE][_DID][_MASTER_DPID][_PID_ALIAS][_SYNC-MODE][_TIMESTAMP]SPLITNUM.sync[.gz]",
        "default",
    }
)

# Macro spellings of the documentation's pages -> the field.
_NAME_MACROS: Final = {
    "SYNC_TYPE": "SYNC_TYPE",
    "ORDER_ID": "ORDER_ID",
    "DID": "ORDER_ID",
    "DPID": "DPID",
    "MASTER_DPID": "MASTER_DPID",
    "PID_ALIAS": "PID_ALIAS",
    "PIDALIAS": "PID_ALIAS",
    "SYNC_MODE": "SYNC_MODE",
    "SYNC-MODE": "SYNC_MODE",
    "TIMESTAMP": "TIMESTAMP",
    "SPLITNUM": "SPLITNUM",
}
# Documented macros that cannot name a file (separators, content): refused with a reason of their own.
_OTHER_NAMES: Final = (
    "ASCII_SOH NEW_LINE TAB UUID DP_UUID DP_UUID_LIST DPUUIDS MCID SEGMENT_LIST REMOVED_SEGMENT_LIST TRAIT_LIST PID "
    "SET_ATTRIBUTES OUTPUT_ATTRIBUTE_VALUE OUTPUT_ATTRIBUTE_TYPE OPT_OUT OPEN_CURLY_BRACKET CLOSE_CURLY_BRACKET"
)
_OTHER_MACROS: Final = frozenset(_OTHER_NAMES.split())
# Every macro of the "Outbound Template Macros" page (and the spellings of the file-name page).
DOCUMENTED_MACROS: Final = frozenset(_NAME_MACROS) | _OTHER_MACROS
_LITERAL: Final = re.compile(r"[A-Za-z0-9._-]+")
_LETTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_MACRO: Final = re.compile(r'<\s*([A-Za-z_-]+)\s*(?:;\s*([a-z]+)\s*=\s*"([^"]*)"\s*)?>')
_SYNC_TYPES: Final = ("ftp", "s3", "S3", "http")
_DIGITS: Final = frozenset("0123456789")
_ALNUM: Final = _LETTERS | _DIGITS
# What a field's value may contain, and its pattern.
_CHARSETS: Final = {
    "SYNC_TYPE": _ALNUM,
    "ORDER_ID": _DIGITS,
    "DPID": _DIGITS,
    "MASTER_DPID": _DIGITS,
    "PID_ALIAS": _ALNUM | {"-"},
    "SYNC_MODE": _LETTERS,
    "SPLITNUM": _DIGITS | {"-"},
}
_PATTERNS: Final = {
    "SYNC_TYPE": "ftp|s3|S3|http",
    "ORDER_ID": "[0-9]+",
    "DPID": "[0-9]+",
    "MASTER_DPID": "[0-9]+",
    "PID_ALIAS": "[A-Za-z0-9-]+",
    "SYNC_MODE": "iter|full",
}
MAX_OPTIONAL_GROUPS: Final = 3
# A macro name written without <> in literal text: a mistake, never meant as letters of the name.
_BARE_MACRO: Final = re.compile(
    r"(?<![A-Za-z])(" + "|".join(sorted(map(re.escape, DOCUMENTED_MACROS), key=len, reverse=True)) + r")(?![A-Za-z])"
)


class BadTemplate(ConfigError):
    """A name template the bridge cannot read names with (refused at start)."""


class NotThisTemplate(BadFileName):
    """A name does not follow a template at all (as opposed to following it with a bad value)."""


class NameFields(NamedTuple):
    """What a name says, as a template reads and writes it (None: the template has no such field)."""

    sync_type: str | None
    order_id: int | None
    dpid: int | None
    master_dpid: int | None
    pid_alias: str | None
    mode: Literal["iter", "full"]
    timestamp_ms: int
    part: int | None
    split_style: Literal["padded", "dash"]
    gzip: bool


@dataclass(frozen=True, slots=True)
class _Macro:
    field: str
    unit: TimestampUnit = "s"


@dataclass(frozen=True, slots=True)
class _Group:
    elements: tuple[_Element, ...]


_Element = str | _Macro | _Group  # a str is literal text


def _tokens(text: str, template: str) -> Iterator[_Element]:
    """The elements of ``text`` (no group nesting here: groups are cut by the caller)."""
    pos = 0
    while pos < len(text):
        if text[pos] == "<":
            m = _MACRO.match(text, pos)
            if m is None:
                raise BadTemplate("a '<' opens no <MACRO>", template=template, at=pos)
            yield _macro(m.group(1), m.group(2), m.group(3), template)
            pos = m.end()
        elif text.startswith("SPLITNUM", pos):
            yield _Macro("SPLITNUM")
            pos += len("SPLITNUM")
        else:
            m = _LITERAL.match(text, pos)
            if m is None:
                raise BadTemplate(f"{text[pos]!r} cannot be part of a file name", template=template)
            literal = m.group()
            stop = literal.find("SPLITNUM")
            literal = literal if stop < 0 else literal[:stop]
            bare = _BARE_MACRO.search(literal)
            if bare is not None:
                raise BadTemplate(f"write the macro {bare.group()} as <{bare.group()}>", template=template)
            yield literal
            pos += len(literal)


def _macro(name: str, key: str | None, value: str | None, template: str) -> _Macro:
    field = _NAME_MACROS.get(name.upper())
    if field is None:
        reason = "is not a file-name macro" if name.upper() in _OTHER_MACROS else "is not a documented macro"
        raise BadTemplate(f"<{name}> {reason}", template=template)
    if key is None:
        return _Macro(field)
    if field == "TIMESTAMP" and key == "unit" and value in ("s", "ms"):
        return _Macro(field, "ms" if value == "ms" else "s")
    raise BadTemplate(f'<{name}; {key}="{value}"> is not supported (only <TIMESTAMP; unit="s|ms">)', template=template)


def _elements(text: str) -> list[_Element]:
    out: list[_Element] = []
    pos = 0
    while pos < len(text):
        start = text.find("[", pos)
        stop = text.find("]", pos)
        if stop >= 0 and (start < 0 or stop < start):
            raise BadTemplate("a ']' closes no '['", template=text)
        if start < 0:
            out.extend(_tokens(text[pos:], text))
            break
        out.extend(_tokens(text[pos:start], text))
        end = text.find("]", start)
        if end < 0 or "[" in text[start + 1 : end]:
            raise BadTemplate("brackets must pair and not nest", template=text)
        out.append(_Group(tuple(_tokens(text[start + 1 : end], text))))
        pos = end + 1
    return out


def _macros(elements: list[_Element] | tuple[_Element, ...]) -> Iterator[_Macro]:
    for e in elements:
        if isinstance(e, _Macro):
            yield e
        elif isinstance(e, _Group):
            yield from _macros(e.elements)


class NameTemplate:
    """A destination's file-name template (see the module). ``destination_id`` is the destination it is
    configured for: a name without ``ORDER_ID`` is that destination's."""

    def __init__(self, text: str, *, destination_id: int | None = None) -> None:
        self.text = text
        self.destination_id = destination_id
        elements = _elements(text.removesuffix("[.gz]").removesuffix(".gz"))
        self.extension = _cut_extension(elements, text)
        if elements and elements[-1] == _Macro("SPLITNUM"):
            elements.pop()
        self._elements = tuple(elements)
        self._check()
        self.fields = frozenset(m.field for m in _macros(self._elements))
        self.unit: TimestampUnit = next(m.unit for m in _macros(self._elements) if m.field == "TIMESTAMP")
        self._expansions = [_compile(e, self.extension) for e in self._expanded()]

    def __repr__(self) -> str:
        return f"NameTemplate({self.text!r}, destination_id={self.destination_id})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameTemplate):
            return NotImplemented
        return (self.text, self.destination_id) == (other.text, other.destination_id)

    def __hash__(self) -> int:
        return hash((self.text, self.destination_id))

    def _check(self) -> None:
        macros = [m.field for m in _macros(self._elements)]
        for field in sorted({f for f in macros if macros.count(f) > 1}):
            raise BadTemplate(f"<{field}> appears twice", template=self.text)
        if "SPLITNUM" in macros:
            raise BadTemplate("SPLITNUM must come right before the extension", template=self.text)
        groups = [e for e in self._elements if isinstance(e, _Group)]
        for field in ("SYNC_MODE", "TIMESTAMP"):
            if field not in macros:
                raise BadTemplate(f"a template must name <{field}>", template=self.text)
            if any(m.field == field for g in groups for m in _macros(g.elements)):
                raise BadTemplate(f"<{field}> cannot be optional", template=self.text)
        if len(groups) > MAX_OPTIONAL_GROUPS or any(not list(_macros(g.elements)) for g in groups):
            raise BadTemplate(f"at most {MAX_OPTIONAL_GROUPS} [...] groups, each with a macro", template=self.text)
        for flat in self._expanded():
            _check_readable([*flat, _Macro("SPLITNUM")], self.text)

    def _expanded(self) -> Iterator[list[str | _Macro]]:
        """Each way the optional groups may be present or not, flattened."""
        groups = [e for e in self._elements if isinstance(e, _Group)]
        for present in itertools.product((True, False), repeat=len(groups)):
            chosen = dict(zip(map(id, groups), present, strict=True))
            flat: list[str | _Macro] = []
            for e in self._elements:
                if isinstance(e, _Group):
                    if chosen[id(e)]:
                        flat.extend(x for x in e.elements if not isinstance(x, _Group))
                else:
                    flat.append(e)
            yield flat

    # --- reading -------------------------------------------------------------------------------------

    def match(self, name: str) -> NameFields:
        """The fields of a part name. Raises ``BadFileName`` when ``name`` does not follow the template, or
        follows it more than one way."""
        found = [f for regex in self._expansions if (f := _fields(regex.fullmatch(name), self.unit)) is not None]
        if not found:
            raise NotThisTemplate(name, f"does not follow the name template {self.text}")
        if len(set(found)) > 1:
            raise BadFileName(name, f"follows the name template {self.text} in more than one way")
        return found[0]

    # --- writing -------------------------------------------------------------------------------------

    def render_root(self, fields: NameFields) -> str:
        """The batch root of ``fields`` (no part number, no extension)."""
        values = _values(fields, self.unit)
        out: list[str] = []
        for e in self._elements:
            if isinstance(e, _Group):
                if all(values.get(m.field) is not None for m in _macros(e.elements)):
                    out.extend(_render(x, values, self.text) for x in e.elements)
            else:
                out.append(_render(e, values, self.text))
        return "".join(out)


def _cut_extension(elements: list[_Element], text: str) -> str:
    """Remove and return the extension: the last literal from its first '.' on (``.sync`` when none)."""
    last = elements[-1] if elements else None
    if not isinstance(last, str) or "." not in last:
        return ".sync"
    head, dot, ext = last.partition(".")
    extension = dot + ext
    if extension in (".info", ".gz") or not ext or "." in ext:
        raise BadTemplate(f"{extension!r} cannot be the extension of a part", template=text)
    if head:
        elements[-1] = head
    else:
        elements.pop()
    return extension


def _check_readable(flat: list[str | _Macro], text: str) -> None:
    """A field of varying length must be followed by a character it cannot hold, so a name reads one way."""
    for here, after in itertools.pairwise(flat):
        if not isinstance(here, _Macro) or here.field == "TIMESTAMP":
            continue
        follows = (_DIGITS | {"-"}) if after == _Macro("SPLITNUM") else _first_chars(after)
        if follows & _CHARSETS[here.field]:
            raise BadTemplate(f"<{here.field}> must be followed by a character it cannot contain", template=text)


def _first_chars(e: str | _Macro) -> frozenset[str]:
    if isinstance(e, str):
        return frozenset(e[:1])
    return _DIGITS if e.field == "TIMESTAMP" else _CHARSETS[e.field]


def _compile(flat: list[str | _Macro], extension: str) -> re.Pattern[str]:
    parts: list[str] = []
    for e in flat:
        if isinstance(e, str):
            parts.append(re.escape(e))
        elif e.field == "TIMESTAMP":
            parts.append(f"(?P<TIMESTAMP>[0-9]{{{13 if e.unit == 'ms' else 10}}})")
        else:
            parts.append(f"(?P<{e.field}>{_PATTERNS[e.field]})")
    parts.append(r"(?P<SPLITNUM>[0-9]{3,}|-[0-9]+)?" + re.escape(extension) + r"(?P<gz>\.gz)?")
    return re.compile("".join(parts))


def _fields(m: re.Match[str] | None, unit: TimestampUnit) -> NameFields | None:
    if m is None:
        return None
    g = m.groupdict()
    split = g.get("SPLITNUM")
    part = None if split is None else int(split.lstrip("-"))
    ids = [None if g.get(k) is None else int(g[k]) for k in ("ORDER_ID", "DPID", "MASTER_DPID")]
    if any(i is not None and i > MAX_ID for i in ids) or part == 0:
        return None
    stamp = int(g["TIMESTAMP"])
    return NameFields(
        g.get("SYNC_TYPE"),
        ids[0],
        ids[1],
        ids[2],
        g.get("PID_ALIAS"),
        "iter" if g["SYNC_MODE"] == "iter" else "full",
        stamp * 1000 if unit == "s" else stamp,
        part,
        "dash" if split is not None and split.startswith("-") else "padded",
        g.get("gz") is not None,
    )


def _values(fields: NameFields, unit: TimestampUnit) -> Mapping[str, object]:
    return {
        "SYNC_TYPE": fields.sync_type,
        "ORDER_ID": fields.order_id,
        "DPID": fields.dpid,
        "MASTER_DPID": fields.master_dpid,
        "PID_ALIAS": fields.pid_alias,
        "SYNC_MODE": fields.mode,
        "TIMESTAMP": fields.timestamp_ms // 1000 if unit == "s" else fields.timestamp_ms,
    }


def _render(e: _Element, values: Mapping[str, object], text: str) -> str:
    if isinstance(e, str):
        return e
    assert isinstance(e, _Macro)
    value = values.get(e.field)
    if value is None:
        raise BadFileName(text, f"the name template needs a value for <{e.field}>")
    return str(value)


def split_suffix(part: int | None, style: Literal["padded", "dash"]) -> str:
    """The part number as a name carries it (nothing for an unsplit batch)."""
    if part is None:
        return ""
    return f"{part:03d}" if style == "padded" else f"-{part}"


def sync_type_ok(value: str | None) -> bool:
    return value is None or value in _SYNC_TYPES
