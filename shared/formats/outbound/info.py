"""The outbound ``.info`` control file: the list of a batch's parts, each with its byte size, line count
and md5, and their totals, in the platform's JSON (``{"Files": [...], "Totals": {...}}``).

Its name is ``<batch root>.info`` (``names``). The "Transfer-Control Files" page writes it as a JavaScript
object (``{ Files: [ { FileByteSize: 293029329, ... } ] }``: keys without quotes), so that is read as well
as strict JSON, and a byte order mark before it is dropped; the values are held to the same rules either
way (a size given as a string is still an error). Parsing checks the shape only;
``InfoFile.inconsistencies`` says whether the listing adds up, and a reader checks each part it reads
against its entry. The byte sizes and line counts include header rows and blank spacer lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.formats import FormatError
from shared.formats.lines import UTF8_BOM
from shared.formats.outbound.names import OutboundFileName
from shared.formats.parts import PartSummary

# A JSON string, or a bare key (an identifier right before ':'): what turns the page's notation into JSON.
# Possessive, and a key starts only where a word does: linear on any input (a hostile .info cannot make it
# backtrack over a long run of letters from every position).
_STRING_OR_KEY: Final = re.compile(
    r'(?P<string>"(?:[^"\\\n]++|\\.)*+")|(?<![A-Za-z0-9_$])(?P<key>[A-Za-z_$][A-Za-z0-9_$]*+)(?P<colon>\s*+:)'
)


class BadInfoFile(FormatError):
    """A ``.info`` control file is not JSON of the expected shape."""


class _InfoModel(BaseModel):
    # Unknown keys are ignored: the platform may add some. Strict: a size given as a string is an error.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", strict=True)


class InfoFileEntry(_InfoModel):
    file_name: str = Field(alias="FileName", min_length=1)
    byte_size: int = Field(alias="FileByteSize", ge=0)
    line_count: int = Field(alias="FileLineCount", ge=0)
    sequence_number: int = Field(alias="FileSequenceNumber", ge=1)
    # Not checked as hex: the contract's own sample digest holds a 'g'.
    md5: str = Field(alias="md5", min_length=32, max_length=32)


class InfoTotals(_InfoModel):
    file_name: str = Field(alias="FileName", min_length=1)
    total_byte_size: int = Field(alias="TotalByteSize", ge=0)
    total_number_files: int = Field(alias="TotalNumberFiles", ge=0)
    total_number_lines: int = Field(alias="TotalNumberLines", ge=0)


class InfoFile(_InfoModel):
    """The batch's control file: ``{"Files": [...], "Totals": {...}}`` with the platform's key names.

    Totals exclude the ``.info`` itself; byte sizes are as stored (compressed), line counts of the
    content. Parsing checks the shape only; ``inconsistencies`` checks that the parts add up.
    """

    files: tuple[InfoFileEntry, ...] = Field(alias="Files")
    totals: InfoTotals = Field(alias="Totals")

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    def to_javascript(self) -> bytes:
        """The layout of the "Transfer-Control Files" page: keys without quotes, one per line."""

        def obj(d: dict[str, object], indent: str) -> str:
            inner = ",\n".join(f"{indent}  {k}: {json.dumps(v)}" for k, v in d.items())
            return f"{{\n{inner}\n{indent}}}"

        doc = self.model_dump(by_alias=True)
        order = ("FileByteSize", "FileLineCount", "FileName", "FileSequenceNumber", "md5")
        files = ",\n".join("    " + obj({k: f[k] for k in order}, "    ") for f in doc["Files"])
        files_block = f"[\n{files}\n  ]" if files else "[]"
        return f"{{\n  Files: {files_block},\n  Totals: {obj(doc['Totals'], '  ')}\n}}\n".encode()

    def entry(self, file_name: str) -> InfoFileEntry | None:
        for e in self.files:
            if e.file_name == file_name:
                return e
        return None

    def inconsistencies(self) -> list[str]:
        """Why the listing does not add up (empty when it does)."""
        problems = []
        t = self.totals
        if len(self.files) != t.total_number_files:
            problems.append(f"{len(self.files)} files listed, Totals say {t.total_number_files}")
        if sum(e.byte_size for e in self.files) != t.total_byte_size:
            problems.append("file byte sizes do not add up to TotalByteSize")
        if sum(e.line_count for e in self.files) != t.total_number_lines:
            problems.append("file line counts do not add up to TotalNumberLines")
        numbers = sorted(e.sequence_number for e in self.files)
        if numbers != list(range(1, len(numbers) + 1)):
            problems.append("sequence numbers are not 1..n")
        if len({e.file_name for e in self.files}) != len(self.files):
            problems.append("a file is listed twice")
        return problems


def build_info(batch: OutboundFileName, parts: Sequence[PartSummary]) -> InfoFile:
    entries = tuple(
        InfoFileEntry(
            file_name=p.name,
            byte_size=p.byte_size,
            line_count=p.line_count,
            sequence_number=p.number,
            md5=p.md5,
        )
        for p in sorted(parts, key=lambda p: p.number)
    )
    totals = InfoTotals(
        file_name=batch.totals_name,
        total_byte_size=sum(p.byte_size for p in parts),
        total_number_files=len(parts),
        total_number_lines=sum(p.line_count for p in parts),
    )
    return InfoFile(files=entries, totals=totals)


def parse_info(data: bytes, *, file_name: str = "") -> InfoFile:
    """Parse a ``.info``, strict JSON or the documentation's notation. Raises ``BadInfoFile`` naming the first
    problem."""
    data = data.removeprefix(UTF8_BOM)
    try:
        return InfoFile.model_validate_json(data)
    except ValidationError as e:
        problem = e
    if problem.errors()[0]["type"] == "json_invalid":
        # Not JSON: perhaps the page's notation. Only the keys' quotes are added; anything else it may hold
        # that JSON does not (single quotes, comments, trailing commas) stays an error.
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        quoted = _STRING_OR_KEY.sub(_quote_key, text)
        if quoted != text:
            try:
                return InfoFile.model_validate_json(quoted)
            except ValidationError as e:
                problem = e
    first = problem.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(x) for x in first["loc"])
    reason = f"{where}: {first['msg']}" if where else first["msg"]
    raise BadInfoFile("bad .info file", file_name=file_name, reason=reason) from None


def _quote_key(m: re.Match[str]) -> str:
    key = m.group("key")
    return m.group(0) if key is None else f'"{key}"{m.group("colon")}'
