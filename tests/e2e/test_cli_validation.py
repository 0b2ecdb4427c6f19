"""``apply`` checks every document first and writes nothing if any is invalid.

Each case is a file whose first document is valid (a ConfigMap named after
the case) and whose second is not. All the files go to one ``apply`` (one
``-f`` each) on a seeded store: every file must yield exactly one ``error:``
line naming its field and value, the exit code is 1, and ``get -o json`` of
everything is the same before and after (no canary ConfigMap either).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cli, Result, instance_yaml, schedule_yaml

pytestmark = pytest.mark.e2e


def _schedule(*, schedule: str = "@every 1m", **spec: Any) -> str:
    return schedule_yaml("bad", schedule, **spec)


@dataclass(frozen=True)
class Case:
    document: str
    says: tuple[str, ...]  # what the one error line must contain (field, value, reason)


CASES = {
    "jitter-longer-than-the-interval": Case(_schedule(jitter="2m"),
                                            ("spec.jitter: '2m': must be shorter than the shortest "
                                             "time between two ticks (1m)",)),
    "exclude-half-a-range": Case(_schedule(exclude=[{"start": "2026-12-24"}]),
                                 ("spec.exclude[0]: None: an exclusion needs a schedule, or both "
                                  "start and end",)),
    "bad-cron": Case(_schedule(schedule="61 * * * *"),
                     ("SympoziumSchedule default/bad: spec.schedule: '61 * * * *': "
                      "not a valid cron expression",)),
    "bad-time-zone": Case(_schedule(timeZone="Mars/Base", schedule="0 9 * * *"),
                          ("spec.timeZone: 'Mars/Base': unknown time zone",)),
    "bad-time-zone-with-every": Case(_schedule(timeZone="Nowhere/Land"),
                                     ("spec.timeZone: 'Nowhere/Land': unknown time zone",)),
    "bad-enum": Case(_schedule(concurrencyPolicy="Sometimes"),
                     ("spec.concurrencyPolicy: 'Sometimes': must be one of 'Forbid', 'Allow', "
                      "'Replace', 'BufferOne' or 'BufferAll'",)),
    "wrong-type": Case(_schedule(suspend="yes"),
                       ("spec.suspend: 'yes': input should be a valid boolean",)),
    "unknown-field": Case(_schedule(concurencyPolicy="Allow"),
                          ("spec.concurencyPolicy: 'Allow': unknown field",)),
    "missing-field": Case(schedule_yaml("bad", "@daily").replace("  task: Check in.\n", ""),
                          ("spec.task: None: is required",)),
    # issue 10: the typo was never named.
    "misspelled-required-field": Case(
        schedule_yaml("bad", "@daily").replace("  schedule: '@daily'\n", "  schedul: '@daily'\n"),
        ("spec.schedule: None: is required, and spec.schedul is not a known field (misspelled?)",)),
    "secret-value-not-base64": Case("apiVersion: v1\nkind: Secret\nmetadata: {name: key}\n"
                                    "data: {OPENAI_API_KEY: sk-plain-text!}\n",
                                    ("Secret default/key: data.OPENAI_API_KEY: '<hidden>': must be "
                                     "base64 (or put the plain value under stringData)",)),
    "bad-name": Case(schedule_yaml("Bad_Name", "@daily"),
                     ("SympoziumSchedule default/Bad_Name: metadata.name: 'Bad_Name': must be "
                      "lowercase",)),
    "schedule-name-too-long": Case(schedule_yaml("a" * 64, "@daily"),
                                   ("metadata.name: 'aaaa", "at most 63 characters")),
    "unknown-kind": Case("apiVersion: sympozium.ai/v1alpha1\nkind: SympoziumSchedul\n"
                         "metadata: {name: x}\n",
                         ("SympoziumSchedul default/x: kind: 'SympoziumSchedul': unknown kind",)),
    "configmap-data-not-a-string": Case("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"
                                        "data: {retries: 3}\n",
                                        ("ConfigMap default/cm: data.retries: 3: must be a string",)),
    "broken-yaml": Case("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n",
                        ("line 11, column 1: invalid YAML (while parsing a flow mapping",)),
}


def _manifest(case: str, document: str) -> str:
    canary = textwrap.dedent(f"""\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: canary-{case}
        data:
          key: value
        """)
    return canary + "---\n" + document


@dataclass(frozen=True)
class Outcome:
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    result: Result
    files: dict[str, Path]

    def errors_from(self, case: str) -> list[str]:
        prefix = f"error: {self.files[case]}: "
        return [line for line in self.result.err_lines if line.startswith(prefix)]


# Unquoted, PyYAML would read these as a datetime and a date, which JSON cannot hold.
TIMESTAMPS = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: when
  annotations: {checked-at: 2026-03-01T10:00:00Z}
data: {at: 2026-03-01}
"""


@pytest.fixture(scope="module")
def outcome(module_cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """Every case in one `apply` (one -f per case): all are checked, each error names
    its file, and nothing, not even a valid canary, may be written."""
    cli = module_cli
    cli.ok("apply", "-f", "-", stdin="---\n".join([instance_yaml(), schedule_yaml("hb", "@daily"),
                                                    TIMESTAMPS]))
    before = cli.snapshot()
    folder = tmp_path_factory.mktemp("manifests")
    files = {case: folder / f"{case}.yaml" for case in [*CASES, "two-errors"]}
    for case, spec in CASES.items():
        files[case].write_text(_manifest(case, spec.document))
    files["two-errors"].write_text(_manifest("two-errors", CASES["bad-cron"].document) + "---\n"
                                   + CASES["bad-enum"].document.replace("name: bad", "name: worse"))
    result = cli("apply", *(arg for path in files.values() for arg in ("-f", str(path))))
    return Outcome(before, cli.snapshot(), result, files)


@pytest.mark.parametrize("case", list(CASES))
def test_an_invalid_document_is_one_error_line_naming_field_and_value(
        outcome: Outcome, case: str) -> None:
    (line,) = outcome.errors_from(case)
    for part in CASES[case].says:
        assert part in line, f"{part!r} not in {line!r}"
    assert f"canary-{case}" not in {o["metadata"]["name"] for o in outcome.after}


def test_every_invalid_document_is_reported_and_nothing_applied(outcome: Outcome) -> None:
    assert outcome.result.code == 1, str(outcome.result)
    assert outcome.result.out == "", str(outcome.result)
    assert all(line.startswith("error: ") for line in outcome.result.err_lines), str(outcome.result)
    assert len(outcome.result.err_lines) == len(CASES) + 2
    assert [line.split(": ")[2] for line in outcome.errors_from("two-errors")] == [
        "SympoziumSchedule default/bad", "SympoziumSchedule default/worse"]


def test_invalid_applies_leave_the_store_unchanged(outcome: Outcome) -> None:
    assert outcome.after == outcome.before
    assert {o["metadata"]["name"] for o in outcome.before} == {"alice", "hb", "when"}


def test_yaml_timestamps_stay_strings(outcome: Outcome) -> None:
    (stored,) = [o for o in outcome.before if o["metadata"]["name"] == "when"]
    assert stored["data"] == {"at": "2026-03-01"}
    assert stored["metadata"]["annotations"] == {"checked-at": "2026-03-01T10:00:00Z"}


def test_a_secret_value_is_never_echoed(outcome: Outcome) -> None:
    assert "sk-plain-text" not in outcome.result.err
