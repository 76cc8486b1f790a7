"""The names a deployment reads: each destination's name template, and a default for the others.

The platform lets each destination configure its file names (:mod:`.templates`); a deployment says which
template each of its destinations uses (``IMPORT_NAME_TEMPLATES`` in ingest) and :class:`OutboundNames`
reads names accordingly. With nothing configured it reads the documented default (:mod:`.names`), exactly as
``parse_outbound_name`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from shared.formats import BadFileName
from shared.formats.fields import digits
from shared.formats.outbound.names import INFO_SUFFIX, OutboundFileName, is_info_name, parse_outbound_name
from shared.formats.outbound.templates import DEFAULT_TEMPLATE_TEXTS, BadTemplate, NameTemplate, NotThisTemplate


def name_template(text: str, destination_id: int | None = None) -> NameTemplate | None:
    """The template ``text`` names (None: the documented default). Raises ``BadTemplate``."""
    text = text.strip()
    if text in DEFAULT_TEMPLATE_TEXTS:
        return None
    return NameTemplate(text, destination_id=destination_id)


class OutboundNames:
    """The names a deployment reads: per destination the template it was configured with, and for every
    other destination the ``*`` template, or the documented default.

    ``templates`` maps a destination id (as text) or ``*`` to a template (:func:`name_template`); raises
    ``BadTemplate`` for a bad key or template. A name is read by its destination's template only (a
    template with ``ORDER_ID`` takes only names carrying its destination id; one without takes any name
    that follows it); names of configured destinations never fall back to the default.
    """

    def __init__(self, templates: Mapping[str, str] | None = None) -> None:
        self._templates: dict[int, NameTemplate | None] = {}
        self._default: NameTemplate | None = None
        for key, text in (templates or {}).items():
            if key.strip() == "*":
                self._default = name_template(text)
            elif digits(key.strip()):
                self._templates[int(key)] = name_template(text, int(key))
            else:
                raise BadTemplate("a name template is keyed by a destination id or *", key=key)
        if self._default is not None and "ORDER_ID" not in self._default.fields:
            raise BadTemplate("the * template must carry <ORDER_ID>: it names files of many destinations")
        all_ = [*self._templates.values(), self._default]
        self._extensions = list(dict.fromkeys(".sync" if t is None else t.extension for t in all_))

    def parse(self, name: str) -> OutboundFileName:
        """Parse a part name (no directory). Raises ``BadFileName`` with the reason."""
        found: set[OutboundFileName] = set()
        specific: BadFileName | None = None  # a template the name follows, with a value it cannot take
        for destination, template in self._templates.items():
            try:
                parsed = _parse_with(name, template, destination)
            except NotThisTemplate:
                continue
            except BadFileName as exc:
                specific = specific or exc
                continue
            if parsed.destination_id == destination:
                found.add(parsed)
        try:
            parsed = _parse_with(name, self._default, None)
            if parsed.destination_id not in self._templates:
                found.add(parsed)
        except BadFileName as exc:
            if not found and specific is not None:
                raise specific from None
            if not found and self._templates:
                raise BadFileName(name, f"{exc.reason} (nor does it follow a destination's name template)") from None
            if not found:
                raise
        if len(found) > 1:
            which = sorted(str(n.destination_id) for n in found)
            raise BadFileName(name, f"follows the name templates of destinations {', '.join(which)}")
        if not found:
            raise BadFileName(name, "its destination names its files by another template")
        return found.pop()

    def batch_root_of(self, name: str) -> str:
        """The batch root of a part name or of a ``.info`` name: the key to group parts with their info."""
        if not is_info_name(name):
            return self.parse(name).batch_root
        root = name[: -len(INFO_SUFFIX)]
        problem: BadFileName | None = None
        for extension in self._extensions:
            try:
                parsed = self.parse(root + extension)
            except BadFileName as exc:
                problem = problem or exc
                continue
            if parsed.part is not None:
                raise BadFileName(name, "a .info name has no part number")
            return root
        assert problem is not None
        raise BadFileName(name, problem.reason)


def _parse_with(name: str, template: NameTemplate | None, destination: int | None) -> OutboundFileName:
    if template is None:
        return parse_outbound_name(name)
    f = template.match(name)
    try:
        parsed = OutboundFileName(
            f.sync_type,  # type: ignore[arg-type]  # the template's pattern admits the sync types only
            f.order_id if f.order_id is not None else destination,
            f.master_dpid,
            f.mode,
            f.timestamp_ms,
            f.part,
            f.gzip,
            f.pid_alias,
            f.split_style,
            f.dpid,
            template,
        )
    except BadFileName as exc:
        raise BadFileName(name, exc.reason) from None
    if parsed.name != name:
        # Its parts, its .info and its ledger row go by the name as written: one spelling per batch.
        raise BadFileName(name, "is not written as the template writes it (a number with leading zeros?)")
    return parsed


DEFAULT_NAMES: Final = OutboundNames()
