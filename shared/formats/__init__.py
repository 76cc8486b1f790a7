"""The platform's file formats, as pure functions over bytes (no I/O).

* ``lines``: incremental line splitting with a hard line-length bound and incremental gzip decoding,
  what every parser reads through.
* ``parts``: the part writer both directions use to split large runs into parts of bounded size.
* ``fields``: the field rules both directions share (ASCII digits, 64-bit ids, user ids in writers).
* ``inbound``: the platform's *inbound* data files (``ftp_dpm_…``), which the bridge writes on export:
  ``inbound.names``, ``inbound.records`` (a line), ``inbound.parser`` (a file), ``inbound.writer``.
* ``outbound``: the platform's *outbound* batch files and their ``.info`` control files, which the
  bridge reads on import: ``outbound.names``, ``outbound.info``, ``outbound.records`` (a line),
  ``outbound.parser`` (a part), ``outbound.writer``.

The errors common to every format live here, so that a caller can catch ``FormatError`` (a
``PermanentError``: the file is wrong, retrying cannot help) for any of them. Problems with a single
line are not raised: parsers yield them as values and go on with the next line.
"""

from __future__ import annotations

from shared.errors import PermanentError


class FormatError(PermanentError):
    """A platform file (its name or its content) does not follow the format."""


class BadFileName(FormatError):
    """A file name does not follow the grammar, or a name cannot be built from the given parts."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"bad file name: {reason}", file_name=name, reason=reason)
        self.name = name
        self.reason = reason


class EmptyFile(FormatError):
    """The file holds no record: the platform rejects such inbound files."""


class CorruptGzip(FormatError):
    """A ``.gz`` stream is not valid gzip, or is truncated."""


class DecompressedTooLarge(CorruptGzip):
    """A ``.gz`` stream inflates to more than the bound on a part's content (a gzip bomb)."""


class InvalidRecord(FormatError):
    """A writer was given a record that cannot be written in the format."""


__all__ = ["BadFileName", "CorruptGzip", "DecompressedTooLarge", "EmptyFile", "FormatError", "InvalidRecord"]
