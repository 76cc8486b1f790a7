"""ecsim's bulk path for inbound files: the lines the bridge writes, applied a block at a time.

The line-by-line path (:class:`~shared.formats.inbound.InboundParser` feeding one record at a time into
the profile store) costs 13-20 us a line in Python: a 1M-ID export kept the simulated platform busy for
15 s, which the export benchmark, timed to the platform's receipts, counted as the bridge's. Most files
are what the bridge writes: every line ``<ID of the data source's type>\\t<trait tokens>``, each user
once, a handful of distinct trait lists per file. This path recognises such a file with C-level
operations on blocks of whole lines (two regular-expression scans and a byte count per block; a block whose
lines all have one width and one trait list, as the bridge writes them, by fixed-width slices instead:
:func:`uniform_tail`, a third of the scans' cost), parses each distinct trait list once, and applies each group
of users that share one with a few set operations (:meth:`~services.ecsim.profiles.Transaction.apply_many`).

It gives exactly the receipt and the profile changes the line-by-line path gives, because it only takes
files where the two cannot differ: no line error of any kind (over-long, blank, BOM, ``\\r``, bad
UTF-8, bad token, invalid ID), no user twice (so neither line order nor the per-user line limit
matters), no injected line rejection. At the first block that is not such, :class:`NotBulk` is raised;
the caller rolls the transaction back and processes the file line by line from its start.
"""

from __future__ import annotations

import binascii
import re
import struct
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from operator import itemgetter
from typing import Final

from services.ecsim.inbound_receipts import FileStats
from services.ecsim.profiles import Key, Transaction
from shared.formats import FormatError
from shared.formats.fields import BadToken
from shared.formats.inbound import InboundCounters
from shared.formats.inbound.records import MAX_LINE_BYTES, parse_traits
from shared.formats.lines import GzipDecoder
from shared.ids import ECID_LENGTH, IdType

# The IDs taken in bulk, per ID type: (pattern, length, compact key from bytes: ``profiles.encode_id``'s, the
# bytes the pattern allows).
_DIGITS: Final = b"0123456789"
_ECID_FORM: Final = (rb"[0-9]{%d}" % ECID_LENGTH, ECID_LENGTH, int, _DIGITS)
_SHA256_FORM: Final = (rb"[0-9a-f]{64}", 64, binascii.unhexlify, _DIGITS + b"abcdef")
_ID_FORMS: Final[dict[str, tuple[tuple[bytes, int, Callable[[bytes], Key], bytes], ...]]] = {
    "ecid": (_ECID_FORM,),
    # A declared data source's IDs: SHA-256 digests, or ECIDs (valid declared IDs too); others line by line.
    "declared": (_SHA256_FORM, _ECID_FORM),
}
BULK_ID_TYPES: Final = frozenset(_ID_FORMS)


class NotBulk(Exception):
    """The file holds something only the line-by-line path handles exactly: process it that way."""


@dataclass(frozen=True, slots=True)
class TraitRules:
    """How one file's trait lists are realised (the data source's onboarded traits, its mode)."""

    namespace: int  # the DPID whose IDs the file holds
    onboarded: Collection[int]
    overwrite: bool
    replace: Collection[int] | None  # every trait of the owner, for .overwrite files


class BulkApplier:
    """Applies one file in bulk into ``tx``, counting into ``counters`` and ``stats`` as the line-by-line
    path would. Raises :class:`NotBulk` (the caller rolls back) or the zone's/format's own errors."""

    def __init__(
        self,
        id_type: IdType,
        rules: TraitRules,
        tx: Transaction,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self._forms = [
            (
                re.compile(rb"^(" + pattern + rb")\t", re.M),
                re.compile(rb"\t([^\t\r\n]{0,%d})\n" % max(0, max_line_bytes - id_len - 1)),
                key,
            )
            for pattern, id_len, key, _ in _ID_FORMS[id_type]
        ]
        # The same forms by ID length, for blocks whose lines all have one width and one trait list.
        self._fixed = {id_len: (key, alphabet) for _, id_len, key, alphabet in _ID_FORMS[id_type]}
        self.uniform_blocks = 0  # blocks taken by ``uniform_tail`` (the bridge's files: all of them)
        self._max_line = max_line_bytes
        self._rules = rules
        self._tx = tx
        self._seen: set[Key] = set()
        self._parsed: dict[bytes, tuple[tuple[int, ...], tuple[int, ...], int, int]] = {}
        self.counters = InboundCounters()
        self.stats = FileStats()

    async def apply(self, chunks: AsyncIterator[bytes], *, gzip: bool) -> None:
        async for block in self._blocks(chunks, gzip=gzip):
            self._block(block)
        if self.counters.records_received == 0:
            raise NotBulk("no record")  # the line-by-line path says why (empty, blank lines only)

    async def _blocks(self, chunks: AsyncIterator[bytes], *, gzip: bool) -> AsyncIterator[bytes]:
        """The content in blocks of whole lines (a last unterminated line gets its ``\\n``)."""
        decoder = GzipDecoder() if gzip else None
        rest = b""
        try:
            async for chunk in chunks:
                self.counters.bytes_read += len(chunk)
                for piece in decoder.feed(chunk) if decoder is not None else (chunk,):
                    block, rest = self._cut(rest + piece)
                    if block:
                        yield block
            for piece in decoder.close() if decoder is not None else ():
                block, rest = self._cut(rest + piece)
                if block:
                    yield block
        except FormatError as exc:
            raise NotBulk(str(exc)) from None  # the line-by-line path rejects the file, with its counters
        if rest:
            yield rest + b"\n"

    def _cut(self, buf: bytes) -> tuple[bytes, bytes]:
        """(whole lines, the unfinished one)."""
        cut = buf.rfind(b"\n") + 1
        if len(buf) - cut > self._max_line:
            raise NotBulk("an over-long line")
        return buf[:cut], buf[cut:]

    def _block(self, block: bytes) -> None:
        n = block.count(b"\n")
        if block.count(b"\t") != n:
            raise NotBulk("a line not in the bridge's form")
        if self._uniform(block, n):
            return
        for form in self._forms:
            ids_re, tails_re, to_key = form
            ids = ids_re.findall(block)
            if len(ids) == n:
                tails = tails_re.findall(block)
                if len(tails) == n:
                    break
        else:
            raise NotBulk("a line not in the bridge's form")
        if form is not self._forms[0]:
            self._forms.remove(form)  # the file's next blocks are likely of the same form: tried first
            self._forms.insert(0, form)
        keys = list(map(to_key, ids))
        fresh = set(keys)
        if len(fresh) != n or not self._seen.isdisjoint(fresh):
            raise NotBulk("a user on several lines")
        self._seen |= fresh
        distinct = set(tails)
        if len(distinct) == 1:
            self._group(tails[0], fresh)
            return
        groups: dict[bytes, set[Key]] = {t: set() for t in distinct}
        for tail, key in zip(tails, keys, strict=True):
            groups[tail].add(key)
        for tail, members in groups.items():
            self._group(tail, members)

    def _uniform(self, block: bytes, n: int) -> bool:
        """Apply a block whose lines are one ID of a form each and all the same trait list, without the regular
        expressions (a third of their cost: fixed-width slices and byte counts); False, nothing applied, for any
        other block (the regular expressions then take it, or refuse it)."""
        id_len = block.find(b"\t")
        fixed = self._fixed.get(id_len)
        if fixed is None:
            return False
        to_key, alphabet = fixed
        tail = uniform_tail(block, n, id_len, alphabet, self._max_line)
        if tail is None:
            return False
        width = len(block) // n
        keys = list(map(to_key, map(itemgetter(0), struct.iter_unpack(f"{id_len}s{width - id_len}x", block))))
        fresh = set(keys)
        if len(fresh) != n or not self._seen.isdisjoint(fresh):
            raise NotBulk("a user on several lines")
        self._seen |= fresh
        self.uniform_blocks += 1
        self._group(tail, fresh)
        return True

    def _traits(self, tail: bytes) -> tuple[tuple[int, ...], tuple[int, ...], int, int]:
        """(adds, removes, signals, removals ignored) of one trait list, parsed once per file."""
        parsed = self._parsed.get(tail)
        if parsed is None:
            try:
                adds, removes, signals, ignored = parse_traits(tail.decode("utf-8"), self._rules.overwrite)
            except (UnicodeDecodeError, BadToken):
                raise NotBulk("a line with a format error") from None
            parsed = self._parsed[tail] = (adds, removes, len(signals), ignored)
        return parsed

    def _group(self, tail: bytes, keys: set[Key]) -> None:
        """The users of ``keys``, each on one line with trait list ``tail``: ``InboundProcessor._apply``'s
        rules, once for all of them."""
        adds_all, removes_all, signals, ignored = self._traits(tail)
        n = len(keys)
        c, s, rules = self.counters, self.stats, self._rules
        c.lines += n
        c.records_received += n
        c.records_parsed += n
        c.traits_added += len(adds_all) * n
        c.traits_removed += len(removes_all) * n
        c.signals += signals * n
        c.removals_ignored += ignored * n
        s.records += n
        adds = [t for t in adds_all if t in rules.onboarded]
        removes = [t for t in removes_all if t in rules.onboarded]
        failed = len(adds_all) + len(removes_all) - len(adds) - len(removes)
        if failed:
            s.traits_failed += failed * n
            s.users_failed += n
        clears = rules.overwrite and not (adds_all or removes_all or signals)
        if not (adds or removes or clears):
            s.no_trait += n
            return
        self._tx.apply_many(rules.namespace, keys, adds, removes, replace=rules.replace)
        s.stored += n
        s.realized += len(adds) * n
        s.bulk_devices += n  # distinct users: no user is on two lines of a bulk file


def uniform_tail(block: bytes, n: int, id_len: int, alphabet: bytes, max_line: int) -> bytes | None:
    """The trait list of a block of ``n`` whole lines (as many TABs as line breaks) that are all ``<ID>\\t<trait
    list>\\n`` with an ID of ``id_len`` bytes from ``alphabet`` and the same trait list, of at most ``max_line``
    bytes each: what the bulk path's regular expressions accept, told from slices every ``width`` bytes. None for
    any other block."""
    if n == 0 or len(block) % n:
        return None
    width = len(block) // n
    if width < id_len + 2 or width - 1 > max_line:
        return None
    line = block[:width]
    if line[id_len : id_len + 1] != b"\t":
        return None
    # Every line's byte at each position past its ID equals the first line's: one TAB at id_len, one line break at
    # the end (the counts leave none elsewhere), the same trait list between.
    for pos in range(id_len, width):
        if block[pos::width] != line[pos : pos + 1] * n:
            return None
    tail = line[id_len + 1 : -1]
    if b"\r" in tail:
        return None
    # The IDs hold nothing but ``alphabet``: removing it leaves the lines' identical rest, n times.
    if len(block.translate(None, alphabet)) != n * len(line[id_len:].translate(None, alphabet)):
        return None
    return tail
