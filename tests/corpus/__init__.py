"""The bad-input corpus: malformed inputs a real deployment meets, as files plus ``manifest.yaml``.

``load()`` reads the manifest; ``CorpusCase`` gives each case's files and expectations. The files are built
by ``python -m tests.corpus.generate`` (see there for what the outcomes mean) and checked in; a unit test
keeps them in step with the generator.
"""

from __future__ import annotations

import base64
import gzip
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import orjson
import yaml

CORPUS_DIR: Final = Path(__file__).resolve().parent
MANIFEST: Final = CORPUS_DIR / "manifest.yaml"
# Just under the local broker's message.max.bytes (4 MiB) once Kafka's record overhead is added.
NEAR_LIMIT_ID_CHARS: Final = 4_194_080

KINDS: Final = frozenset(
    {
        "outbound-batch",
        "outbound-name",
        "segment-event",
        "membership",
        "export-request",
        "export-batch",
        "inbound-file",
        "catalog",
    }
)
OUTCOMES: Final = frozenset(
    {"rejected", "counted", "dlq", "blocked", "refused", "ecsim-rejected", "ecsim-counted", "config-error"}
)


@dataclass(frozen=True)
class CorpusCase:
    id: str
    kind: str
    expect: str
    description: str
    files: tuple[str, ...]
    reason: str
    extra: dict[str, Any]

    def __str__(self) -> str:
        return self.id

    def paths(self) -> list[Path]:
        return [CORPUS_DIR / f for f in self.files]

    def file_bytes(self) -> dict[str, bytes]:
        """The case's files by base name (outbound parts, .info files, catalog files), verbatim."""
        return {Path(f).name: (CORPUS_DIR / f).read_bytes() for f in self.files}

    def value(self) -> bytes | None:
        """A Kafka case's message value (``None`` for a tombstone); ``.json.gz`` files are inflated."""
        if self.extra.get("tombstone"):
            return None
        if self.extra.get("build") == "near-limit-event":
            return near_limit_event()
        [path] = self.paths()
        data = path.read_bytes()
        return gzip.decompress(data) if path.name.endswith(".gz") else data

    @property
    def key(self) -> bytes:
        """The Kafka key the tests send the case with: its id, so a dead letter names its case."""
        return self.id.encode()

    def __getitem__(self, name: str) -> Any:
        return self.extra[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


@cache
def load() -> tuple[CorpusCase, ...]:
    raw: Any = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    cases = []
    for entry in raw["cases"]:
        entry = dict(entry)
        case = CorpusCase(
            id=entry.pop("id"),
            kind=entry.pop("kind"),
            expect=entry.pop("expect"),
            description=entry.pop("description"),
            files=tuple(entry.pop("files")),
            reason=entry.pop("reason", ""),
            extra=entry,
        )
        cases.append(case)
    return tuple(cases)


def of_kind(*kinds: str) -> list[CorpusCase]:
    return [c for c in load() if c.kind in kinds]


def by_id(case_id: str) -> CorpusCase:
    for case in load():
        if case.id == case_id:
            return case
    raise KeyError(case_id)


def near_limit_event() -> bytes:
    """A segment event whose id is ``NEAR_LIMIT_ID_CHARS`` incompressible characters (fixed seed)."""
    rng = random.Random(3)
    blob = base64.b64encode(rng.randbytes(NEAR_LIMIT_ID_CHARS * 3 // 4 + 3)).decode()[:NEAR_LIMIT_ID_CHARS]
    return orjson.dumps({"event_id": "ev-near-limit", "segment_id": "6500", "id": blob})


def walk_files() -> Iterator[Path]:
    """Every data file of the corpus (not the manifest, README or code)."""
    for path in sorted(CORPUS_DIR.rglob("*")):
        code = path.suffix in (".py", ".md", ".pyc") or "__pycache__" in path.parts
        if path.is_file() and not code and path.name != "manifest.yaml":
            yield path
