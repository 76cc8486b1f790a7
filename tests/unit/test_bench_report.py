"""The README's Performance table is what `make bench-readme` renders from the published results files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import tests.bench.report as report
from shared.settings import REPO_ROOT
from tests.bench.repeat import summarise

RESULTS: dict[str, Any] = {
    "machine": {"cores": 2, "memory_gb": 23.5, "cpu": "Xeon", "python": "3.11.9"},
    "commit": "0123456789abcdef0123",
    "at": "2026-12-03T07:00:00Z",
    "scale": 1.0,
    "repeat": 3,
    "postgres": {"server_version": "15.8", "wal_level": "replica", "synchronous_commit": "on"},
    "import_1m": summarise(
        [
            {"ids": 1_000_000, "seconds": 7.5, "floor_ratio": 1.5},
            {"ids": 1_000_000, "seconds": 6.5, "floor_ratio": 1.25},
            {"ids": 1_000_000, "seconds": 7.0, "floor_ratio": 1.3},
        ]
    ),
    "export_1m": summarise([{"seconds": 4.0, "phases_s": {"succeeded": 4.0}}] * 3),
    "rss_mb": {"ingest": 107.5, "reconcile": 273.0},
}


def test_the_readme_table_is_what_the_command_renders_from_the_published_results() -> None:
    published = report.results_files(report.PUBLISHED_DIR)
    assert published, "tests/bench/published/ holds no results: run `make bench` then `make bench-readme`"
    readme = (REPO_ROOT / "README.md").read_text()
    assert report.readme_block(readme) == report.render(report.load(published))


def test_a_table_gives_each_figure_its_median_and_range_with_the_commit_and_settings() -> None:
    table = report.render([RESULTS])
    assert "commit `0123456789ab` on" in table
    assert "commit `0123456789ab` with uncommitted changes on" in report.render([{**RESULTS, "dirty": True}])
    assert "`wal_level = replica`" in table
    assert "run 3 times" in table
    assert (
        "| import_1m | 3 | ids **1,000,000**, seconds **7** (6.5\u20137.5), floor_ratio **1.3** (1.25\u20131.5) |"
        in table
    )
    assert "| export_1m | 3 | seconds **4**, phases_s.succeeded **4** |" in table
    assert "ingest **107.5**, reconcile **273**" in table
    # Run-wide entries are not scenarios.
    assert "| machine |" not in table
    assert report.render([]).startswith("No published results")


def test_the_table_names_the_services_event_loop_when_the_results_record_it() -> None:
    assert "services on `EVENT_LOOP=asyncio`;" in report.render([{**RESULTS, "event_loop": "asyncio"}])
    assert "EVENT_LOOP" not in report.render([RESULTS])  # results from before the setting: none named
    assert "| event_loop |" not in report.render([{**RESULTS, "event_loop": "uvloop"}])


def test_each_results_file_gets_its_table_the_local_cluster_first(tmp_path: Path) -> None:
    (tmp_path / "results-replica.json").write_bytes(orjson.dumps(RESULTS))
    minimal = {**RESULTS, "postgres": {**RESULTS["postgres"], "wal_level": "minimal"}}
    (tmp_path / "results.json").write_bytes(orjson.dumps(minimal))
    files = report.results_files(tmp_path)
    assert [p.name for p in files] == ["results.json", "results-replica.json"]
    table = report.render(report.load(files))
    assert table.index("`wal_level = minimal`") < table.index("`wal_level = replica`")


def test_readme_mode_publishes_the_results_and_rewrites_only_the_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, published, readme = tmp_path / "var", tmp_path / "published", tmp_path / "README.md"
    results.mkdir()
    (results / "results.json").write_bytes(orjson.dumps(RESULTS))
    readme.write_text(f"before\n{report.BEGIN}\nold table\n{report.END}\nafter\n")
    monkeypatch.setattr(report, "PUBLISHED_DIR", published)
    monkeypatch.setattr(report, "README", readme)
    assert report.main(["--readme", "--results", str(results)]) == 0
    text = readme.read_text()
    assert text.startswith("before\n")
    assert text.endswith("after\n")
    assert "old table" not in text
    assert report.readme_block(text) == report.render([RESULTS])
    assert (published / "results.json").read_bytes() == (results / "results.json").read_bytes()
    # Nothing to publish: a clear refusal, the README untouched.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main(["--readme", "--results", str(empty)]) == 1
    assert readme.read_text() == text


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="no benchmark block"):
        report.replace_block("no markers here", "table")
    with pytest.raises(ValueError, match="no benchmark block"):
        report.readme_block("no markers here")
