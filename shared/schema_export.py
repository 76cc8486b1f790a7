"""Writes one JSON Schema per topic into schemas/topics/ (``make schemas``); ``--check`` compares instead.

The message models in shared/messages.py are the source of truth; the checked-in schemas are for
producers and dashboards in other languages, and a test fails when the two drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from shared.messages import TOPIC_MODELS, Message
from shared.settings import REPO_ROOT

TOPICS_DIR = REPO_ROOT / "schemas" / "topics"


def schema_for(model: type[Message]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://audience-bridge.dev/schemas/topics/{model.topic}.json",
        "title": model.topic,
        "description": model.description,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
        "x-topic": model.topic,
        "x-model": model.__name__,
    }


def render(model: type[Message]) -> bytes:
    return orjson.dumps(schema_for(model), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def expected_files() -> dict[Path, bytes]:
    return {TOPICS_DIR / f"{m.topic}.json": render(m) for m in TOPIC_MODELS}


def main(argv: list[str]) -> int:
    files = expected_files()
    if "--check" in argv:
        stale = [p.name for p, content in files.items() if not p.exists() or p.read_bytes() != content]
        extra = sorted({p.name for p in TOPICS_DIR.glob("*.json")} - {p.name for p in files})
        if stale or extra:
            print(f"schemas out of date: {stale + extra}; run `make schemas`", file=sys.stderr)
            return 1
        return 0
    TOPICS_DIR.mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        path.write_bytes(content)
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
