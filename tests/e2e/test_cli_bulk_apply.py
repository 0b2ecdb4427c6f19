"""``apply -f`` of a large manifest, through the real command: the paths a large apply
takes (libyaml's reader, checking on every core, chains of writes) give what one
object at a time gave.

The manifest is over 1 MB, so it is checked in pieces (cli/bulk.py), and over
2,000 objects, so it is written in more than one chain (cli/apply.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import Cli, instance_yaml, schedule_yaml

pytestmark = pytest.mark.e2e

N = 4_000
TASK = "Check the services of alice: summarise what changed since the last run and open a ticket."


def _schedules(n: int, start: int = 0) -> list[str]:
    return [schedule_yaml(f"s-{i:05d}", "*/30 * * * *", task=f"{TASK} ({i})",
                          timeZone="Europe/Warsaw", concurrencyPolicy="Allow")
            for i in range(start, start + n)]


def _manifest(tmp_path: Path, docs: list[str], name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text("---\n".join(docs))
    assert path.stat().st_size > 1_000_000, "the manifest must be large enough to be cut"
    return path


def _qualified(name: str) -> str:
    return f"sympoziumschedule.sympozium.ai/{name}"


def test_a_large_apply_creates_every_object_in_order_then_finds_them_unchanged(
        cli: Cli, tmp_path: Path) -> None:
    # The instance last in the file: dependency order still writes it first.
    manifest = _manifest(tmp_path, [*_schedules(N), instance_yaml()])
    first = cli.ok("apply", "-f", str(manifest))
    assert first.err == ""
    assert first.out.splitlines() == (["sympoziuminstance.sympozium.ai/alice created"]
                                      + [f"{_qualified(f's-{i:05d}')} created" for i in range(N)])
    stored = cli.ok("get", "schedules", "-o", "json").json()["items"]
    assert len(stored) == N
    assert stored[1234]["spec"]["task"] == f"{TASK} (1234)"
    assert stored[1234]["spec"]["timeZone"] == "Europe/Warsaw"

    # Again, with one spec edited and N more new ones: looked up, updated or created.
    docs = [*_schedules(N), *_schedules(N, start=N), instance_yaml()]
    docs[2500] = docs[2500].replace("*/30 * * * *", "*/15 * * * *")
    again = cli.ok("apply", "-f", str(_manifest(tmp_path, docs, "again.yaml")))
    expected = ["sympoziuminstance.sympozium.ai/alice unchanged"]
    expected += [f"{_qualified(f's-{i:05d}')} {'configured' if i == 2500 else 'unchanged'}"
                 for i in range(N)]
    expected += [f"{_qualified(f's-{i:05d}')} created" for i in range(N, 2 * N)]
    assert again.out.splitlines() == expected
    edited = cli.ok("get", "schedule", "s-02500", "-o", "json").json()
    assert edited["spec"]["schedule"] == "*/15 * * * *"
    assert edited["metadata"]["generation"] == 2


def test_a_document_twice_in_one_apply_is_created_then_updated(cli: Cli, tmp_path: Path) -> None:
    docs = [instance_yaml(), *_schedules(N)]
    docs.insert(2000, schedule_yaml("s-00005", "@hourly", task="Twice."))  # in the second chain
    result = cli.ok("apply", "-f", str(_manifest(tmp_path, docs)))
    lines = result.out.splitlines()
    assert lines[6] == f"{_qualified('s-00005')} created"
    assert lines[2000] == f"{_qualified('s-00005')} configured"
    assert len(lines) == N + 2
    assert cli.ok("get", "schedule", "s-00005", "-o", "json").json()["spec"]["task"] == "Twice."


def test_one_bad_document_late_in_a_large_apply_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    docs = [instance_yaml(), *_schedules(N)]
    docs[N - 10] = schedule_yaml("late", "61 * * * *")  # in the last piece
    result = cli("apply", "-f", str(_manifest(tmp_path, docs)))
    assert result.code == 1
    assert result.out == ""
    assert len(result.err_lines) == 1, result.err
    assert re.fullmatch(r"error: \S+fleet\.yaml: SympoziumSchedule default/late: spec\.schedule: "
                        r"'61 \* \* \* \*': not a valid cron expression.*", result.err_lines[0])
    assert not (cli.data_dir / "store.db").exists()


def test_a_yaml_error_late_in_a_large_file_names_its_line_in_the_whole_file(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sympozium_schedule.cli import manifest_files

    docs = [instance_yaml(), *_schedules(N)]
    docs[N - 10] = docs[N - 10].replace("spec:\n", "spec:\n  broken: [unclosed\n")
    manifest = _manifest(tmp_path, docs)
    line = manifest.read_text().splitlines().index("  broken: [unclosed") + 1
    result = cli("apply", "-f", str(manifest))
    assert result.code == 1
    assert len(result.err_lines) == 1, result.err
    # PyYAML's own reader on the whole file, in one piece: the same line.
    monkeypatch.setattr(manifest_files, "_LIBYAML", False)
    _, [expected] = manifest_files.parse(manifest_files.Source(str(manifest), manifest.read_text()))
    assert result.err_lines[0] == f"error: {expected}"
    found = re.search(r"line (\d+), column \d+", expected)
    assert found is not None
    assert line < int(found.group(1)) <= line + 10
    assert not (cli.data_dir / "store.db").exists()


def test_the_documents_read_are_what_pyyaml_reads(tmp_path: Path) -> None:
    """The file the other tests apply, read by both readers: the same values."""
    from sympozium_schedule.cli.manifest_files import _load_fast, _Loader

    text = _manifest(tmp_path, [instance_yaml(), *_schedules(N)]).read_text()
    fast = _load_fast(text)
    assert fast is not None
    assert fast == [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
