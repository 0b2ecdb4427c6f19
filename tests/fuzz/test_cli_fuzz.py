"""CLI inputs, fuzzed: manifests through ``cli/validate.py`` and whole command lines through
the ``sympozium-schedule`` command, in process; and a handful of real subprocesses.

In process, the command is typer's click command built once and called with
``standalone_mode=False`` (what the entry point does minus ``sys.exit``), so a case
costs a fraction of a millisecond instead of a Python start-up. ``run``, ``router``
and ``bridge`` are never called. The properties:

* validating manifests never raises; each error is one line starting with its
  source; a document with one known problem gets exactly one error, naming the
  field; a sound document gets none;
* a command line never raises; one that fails prints nothing on stdout and exactly
  one ``error:`` line (warnings aside) on stderr, and leaves the store as it was.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sympozium_schedule.cli.errors import one_line
from sympozium_schedule.cli.main import app
from sympozium_schedule.cli.manifest_files import Source, read_sources
from sympozium_schedule.cli.validate import check
from sympozium_schedule.core.cron import compile_schedule
from sympozium_schedule.core.errors import SpecError
from tests.fuzz import corpus
from tests.fuzz.conftest import fuzz
from tests.fuzz.specs import FIELDS, NAMES, UNKNOWN_KEYS, utf8

NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)
COMMAND = typer.main.get_command(app)
API = "sympozium.ai/v1alpha1"
# The store's objects, seeded once per module: commands below may name them.
SEEDED = {"alice", "hb", "cm", "alice-memory"}
UTF8_TEXTS = [t for t in corpus.ODD_TEXTS if utf8(t)]


# --- documents ---------------------------------------------------------------------------------


@dataclass
class Doc:
    obj: Any
    problem: str | None  # the path of the one field known to be wrong, if any
    unknown: str | None = None  # a field whose validity only the compiler knows
    also: str | None = None  # another path the error may name instead of ``problem``


def text(rng: random.Random) -> str:
    return rng.choice(UTF8_TEXTS)


def clean(value: Any) -> Any:
    """``value`` as a store could hold it (test_a_lone_surrogate_* covers the rest)."""
    return corpus.storable(value)


def schedule_doc(rng: random.Random) -> Doc:
    spec = {"instanceRef": "alice", "schedule": rng.choice(corpus.VALID_SCHEDULES),
            "task": text(rng)}
    for key in rng.sample(sorted(set(FIELDS) - {"task"}), rng.randint(0, 5)):
        spec[key] = clean(FIELDS[key].valid(rng))
    obj = {"apiVersion": API, "kind": "SympoziumSchedule",
           "metadata": {"name": rng.choice(NAMES)}, "spec": spec}
    roll = rng.random()
    if roll < 0.45:
        key = rng.choice(sorted(FIELDS))
        spec[key] = clean(FIELDS[key].invalid(rng))
        return Doc(obj, f"spec.{key}")
    if roll < 0.55:
        key = rng.choice(["schedule", "timeZone"])
        spec[key] = text(rng)
        return Doc(obj, None, f"spec.{key}")
    if roll < 0.6:
        key = rng.choice([k for k in UNKNOWN_KEYS if k not in FIELDS and utf8(k) and k])
        spec[key] = clean(corpus.junk(rng))
        # JSON escapes a character beyond U+FFFF as two surrogates, which YAML reads as two
        # lone ones: a key like that cannot be shown, and the error names its object.
        return Doc(obj, f"spec.{key}", also="spec" if max(map(ord, key)) > 0xFFFF else None)
    if roll < 0.65:
        spec.pop(key := rng.choice(["instanceRef", "schedule", "task"]))
        return Doc(obj, f"spec.{key}")
    return Doc(obj, None)


def configmap_doc(rng: random.Random) -> Doc:
    keys = ["MEMORY.md", "a", "a.b", "a-b_c", "x" * 253]
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": rng.choice(NAMES)},
                           "data": {rng.choice(keys): text(rng) for _ in range(rng.randint(0, 3))}}
    roll = rng.random()
    if roll < 0.2:
        key = rng.choice(keys)
        obj["data"][key] = rng.choice([1, True, None, 1.5, [], {}])
        return Doc(obj, f"data.{key}")
    if roll < 0.3:
        key = rng.choice(["", "a b", "a/b", "x" * 254, "\u00e9", "a:b"])
        obj["data"][key] = "v"
        return Doc(obj, f"data.{key}")
    if roll < 0.4:
        obj["binaryData"] = {"b": rng.choice(["not base64!", "====", "a", "YW Jj"])}
        return Doc(obj, "binaryData.b")
    if roll < 0.45:
        obj["binaryData"] = {"b": "YWJj"}
    if roll < 0.5:
        obj["immutable"] = rng.choice(["true", 1, None, "yes"])
        return Doc(obj, None if obj["immutable"] is None else "immutable")
    return Doc(obj, None)


def sympozium_doc(rng: random.Random) -> Doc:
    """An instance or run: their specs are checked against Sympozium's CRDs as warnings only."""
    kind = rng.choice(["SympoziumInstance", "AgentRun"])
    spec = rng.choice([{"agents": {"default": {"model": "gpt-4o"}}},
                       clean(corpus.junk_object(rng, 3)), {}])
    return Doc({"apiVersion": API, "kind": kind, "metadata": {"name": rng.choice(NAMES)}, "spec": spec},
               None)


def broken_metadata(doc: Doc, rng: random.Random) -> Doc:
    """The same document with one problem outside its spec."""
    obj = copy.deepcopy(doc.obj)
    meta = obj["metadata"]
    how = rng.choice(["name", "namespace", "label-key", "label-value", "annotation", "meta-key", "kind",
                      "api", "no-meta", "top-key", "owners"])
    if how == "name":
        meta["name"] = rng.choice(["", "Bad_Name", "a" * 254, "-a", "a..b", 5, None, "\u00e9"])
        return Doc(obj, "metadata.name")
    if how == "namespace":
        meta["namespace"] = rng.choice(["Bad", "a" * 64, "a.b", "-a", 5, True])
        return Doc(obj, "metadata.namespace")
    if how == "label-key":
        key = rng.choice(["", "a b", "a/", "Bad_/x", "x" * 64, "\u00e9", "a/b/c"])
        meta["labels"] = {key: "v"}
        return Doc(obj, f"metadata.labels.{key}")
    if how == "label-value":
        meta["labels"] = {"k": rng.choice(["a b", "x" * 64, "-a", 5, True, None, "\u00e9"])}
        return Doc(obj, "metadata.labels.k")
    if how == "annotation":
        meta["annotations"] = {"k": rng.choice([5, True, None, [], {}])}
        return Doc(obj, "metadata.annotations.k")
    if how == "meta-key":
        meta["nmae"] = "x"
        return Doc(obj, "metadata.nmae")
    if how == "kind":
        obj["kind"] = rng.choice(["SympoziumSchedul", "Pod", "", "Event", 5, None])
        return Doc(obj, "kind")
    if how == "api":
        obj["apiVersion"] = rng.choice(["v1beta1", "", None, 5, "sympozium.ai/v1"])
        return Doc(obj, "apiVersion")
    if how == "no-meta":
        obj["metadata"] = rng.choice([None, "x", [], 5])
        return Doc(obj, "metadata")
    if how == "top-key" and obj["kind"] in ("SympoziumSchedule", "ConfigMap"):
        obj["spek"] = {}
        return Doc(obj, "spek")
    meta["ownerReferences"] = rng.choice(["x", [1], {"uid": "u"}])
    return Doc(obj, "metadata.ownerReferences")


def non_json(doc: Doc, rng: random.Random) -> tuple[Doc, str]:
    """YAML that JSON cannot hold: a non-string key, a set, bytes, a non-finite number."""
    obj = copy.deepcopy(doc.obj)
    meta = obj["metadata"]
    how = rng.choice(["int-key", "bool-key", "set", "binary", "inf", "nan"])
    meta["annotations"] = {"fuzz-key": "fuzz-value"}
    dumped = yaml.safe_dump(obj)
    if how in ("int-key", "bool-key"):
        key = "1" if how == "int-key" else "yes"
        return Doc(obj, "metadata.annotations"), dumped.replace("fuzz-key: fuzz-value", f"{key}: v")
    replacement = {"set": "!!set {x: null}", "binary": "!!binary YWJj", "inf": ".inf", "nan": ".nan"}[how]
    return Doc(obj, "metadata.annotations.fuzz-key"), dumped.replace("fuzz-value", replacement)


YAML_UNPRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def yaml_reads_json_numbers(value: Any) -> bool:
    """Whether YAML reads the JSON text of ``value`` as JSON does. YAML 1.1 takes a
    number without a dot (``1e+308``, what json.dumps writes for 1e308) for a string."""
    if isinstance(value, float):
        return "." in json.dumps(value)
    if isinstance(value, list):
        return all(yaml_reads_json_numbers(v) for v in value)
    if isinstance(value, dict):
        return all(yaml_reads_json_numbers(v) for v in value.values())
    return True


def render(obj: Any, rng: random.Random) -> str:
    style = rng.choice(["block", "flow", "json", "json-indent", "explicit"])
    if style.startswith("json") and not yaml_reads_json_numbers(obj):
        style = "block"
    if style == "json":
        raw = json.dumps(obj, ensure_ascii=False)
        # JSON may carry characters YAML refuses (DEL, C1 controls); escaped, it is YAML too.
        return raw if rng.random() < 0.5 and not YAML_UNPRINTABLE.search(raw) else json.dumps(obj)
    if style == "json-indent":
        return json.dumps(obj, indent=2)
    dumped = yaml.safe_dump(obj, default_flow_style=style == "flow", allow_unicode=rng.random() < 0.5,
                            sort_keys=False, width=rng.choice([40, 80, 10**6]))
    return f"--- # a comment\n{dumped}...\n" if style == "explicit" else dumped


def document(rng: random.Random) -> tuple[Doc, str]:
    """A manifest and its text."""
    doc = rng.choice([schedule_doc, schedule_doc, configmap_doc, sympozium_doc])(rng)
    roll = rng.random()
    if roll < 0.15 and doc.problem is None:
        return non_json(doc, rng)
    if roll < 0.35 and doc.problem is None:
        doc = broken_metadata(doc, rng)
    return doc, render(doc.obj, rng)


YAMLISH = [":", ": ", "- ", "{", "}", "[", "]", ",", "#", "|", ">", "!", "!!str", "!!python/object:os.system",
           "%YAML 1.1", "---", "...", "\t", "\n", "\n  ", "? ", "'", '"', "\\", "@", "`", "kind: ",
           "apiVersion: v1", "metadata:", "  name: x", "*a", "<<: ", "\u2028", "\x85", "\ufeff"]


def yamlish(rng: random.Random) -> str:
    """Text that looks like YAML to a varying degree. No anchors ('&'): a document that
    refers to itself is test_a_self_referential_document_*'s business."""
    parts = [rng.choice(YAMLISH) if rng.random() < 0.6 else rng.choice(corpus.ODD_TEXTS)
             for _ in range(rng.randint(0, 30))]
    return "".join(parts).replace("&", "")


def expected_errors(doc: Doc) -> set[str] | None:
    """The fields an error may name (empty: none expected; None: either way)."""
    if doc.problem is not None:
        return {doc.problem} | ({doc.also} if doc.also else set())
    if doc.unknown is not None:
        spec = doc.obj["spec"]
        try:
            compile_schedule(spec["schedule"], time_zone=spec.get("timeZone", "UTC"), anchor=NOW)
        except SpecError as exc:
            return {exc.field}
    return set()


def names_field(error: str, field: str) -> bool:
    """Whether ``error`` names ``field`` (or an item of it: ``metadata.annotations[1]``)."""
    return any(f": {field}{after}" in error for after in (": ", "[", "."))


@fuzz(2000)
@given(rng=st.randoms(use_true_random=True), how=st.sampled_from(["manifest", "manifest", "yamlish"]))
def test_validating_any_manifest_never_raises_and_one_problem_is_one_error(
        rng: random.Random, how: str) -> None:
    if how == "yamlish":
        source = Source("fuzz.yaml", yamlish(rng))
        checked = check([source], namespace="default", now=NOW)
        assert all(e.startswith("fuzz.yaml: ") for e in checked.errors), checked.errors
        assert all(len(one_line(e)) > len("fuzz.yaml: ") for e in checked.errors), checked.errors
        return
    doc, body = document(rng)
    checked = check([Source("fuzz.yaml", body)], namespace="default", now=NOW)
    expected = expected_errors(doc)
    case = f"document:\n{body}"
    if not expected:
        assert checked.errors == [], case
        assert len(checked.documents) == 1, case
        return
    assert len(checked.errors) == 1, (checked.errors, case)
    (error,) = checked.errors
    assert error.startswith("fuzz.yaml: "), error
    assert any(names_field(error, field) for field in expected), (error, expected, case)
    assert checked.documents == [], case


@fuzz(300)
@given(rng=st.randoms(use_true_random=True))
def test_every_problem_of_many_documents_and_files_is_reported_once(rng: random.Random) -> None:
    sources, problems = [], 0
    for n in range(rng.randint(1, 4)):
        docs = [document(rng) for _ in range(rng.randint(1, 4))]
        problems += sum(1 for doc, _ in docs if expected_errors(doc))
        sources.append(Source(f"f{n}.yaml", "\n---\n".join(body.removesuffix("...\n") for _, body in docs)))
    checked = check(sources, namespace=rng.choice(["default", "other"]), now=NOW)
    assert len(checked.errors) == problems, (checked.errors, [s.text for s in sources])


# --- whole command lines, in process ------------------------------------------------------------


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error: ")]


def invoke(*args: str, stdin: str = "") -> Ran:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            _stdin(io.StringIO(stdin)):
        code = COMMAND.main(list(args), prog_name="sympozium-schedule", standalone_mode=False)
    return Ran(int(code or 0), out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _stdin(replacement: Any) -> Iterator[None]:
    saved, sys.stdin = sys.stdin, replacement
    try:
        yield
    finally:
        sys.stdin = saved


def revision(data_dir: Path) -> int:
    conn = sqlite3.connect(f"file:{data_dir / 'store.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0])
    finally:
        conn.close()


SEED_YAML = f"""\
apiVersion: {API}
kind: SympoziumInstance
metadata: {{name: alice}}
spec: {{agents: {{default: {{model: gpt-4o}}}}}}
---
apiVersion: {API}
kind: SympoziumSchedule
metadata: {{name: hb}}
spec: {{instanceRef: alice, schedule: "@daily", task: Check in.}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cm}}
data: {{MEMORY.md: remember}}
"""


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("cli-fuzz") / "data"
    ran = invoke("apply", "-f", "-", "--data-dir", str(data_dir), stdin=SEED_YAML)
    assert ran.code == 0, ran
    return data_dir


KINDS = ["schedules", "schedule", "symsched", "runs", "ar", "instances", "cm", "events", "ev",
         "SympoziumSchedules.sympozium.ai", "schedules,runs", ",", "pods", "", " ", "schedules,,cm",
         "run,pods"]
OUTPUTS = ["table", "yaml", "json", "wide", "", "JSON"]
SELECTORS = ["a=b", "a", "a==b", "a!=b", "!a", "a in (b)", "=b", ",", "a=b,c", " a = b ",
             "sympozium.ai/schedule"]
# Not the ends of time (9999-12-31, 0001-01-01): test_next_near_the_end_of_time_is_one_error.
AFTERS = ["2026-03-08T09:00:00Z", "2026-03-08T09:00:00", "2026-03-08T09:00:00+25:00", "2026-13-01", "",
          "now", "2026-03-08T09:00:00.123456789Z", "2026-03-08 09:00", "20260308T090000Z", "2026-W10"]
# At most 1000: ten thousand fires of a 366-day interval pass year 9999 (see below).
COUNTS = ["1", "5", "0", "-1", "1000", "10001", "x", "", "1e3", "99999999999999999999"]
NAMESPACES = ["default", "other", "Bad", "", "a" * 64, "-a", "a.b"]


def value(rng: random.Random, pool: list[str]) -> str:
    return rng.choice(pool) if rng.random() < 0.8 else rng.choice(UTF8_TEXTS)


def command_line(rng: random.Random, data_dir: Path) -> tuple[list[str], str]:
    """Arguments (store commands get --data-dir) and stdin."""
    command = rng.choice(["next", "next", "get", "get", "describe", "delete", "trigger", "apply", "bogus"])
    data = ["--data-dir", str(data_dir)]
    ns = ["-n", value(rng, NAMESPACES)] if rng.random() < 0.3 else []
    name = rng.choice(["hb", "alice", "cm", "nope", *NAMES[:20]]) if rng.random() < 0.7 else text(rng)
    if command == "next":
        args = ["next", rng.choice(corpus.VALID_SCHEDULES + corpus.INVALID_SCHEDULES + UTF8_TEXTS)]
        for flag, pool in (("--tz", corpus.VALID_ZONES[:50] + corpus.INVALID_ZONES), ("--after", AFTERS),
                           ("--count", COUNTS), ("-o", OUTPUTS)):
            if rng.random() < 0.4:
                args += [flag, value(rng, pool)]
        return args, ""
    if command == "get":
        args = ["get", value(rng, KINDS), *([name] if rng.random() < 0.3 else []), *ns]
        args += ["-A"] if rng.random() < 0.2 else []
        args += ["-o", value(rng, OUTPUTS)] if rng.random() < 0.4 else []
        args += ["-l", value(rng, SELECTORS)] if rng.random() < 0.2 else []
        return args + data, ""
    if command in ("describe", "delete"):
        kind = value(rng, ["schedule", "schedules", "run", "cm", "instance", "pods", ""])
        target = name if command == "describe" or name not in SEEDED else "nope"
        return [command, kind, target, *ns, *data], ""
    if command == "trigger":
        return ["trigger", name, *ns, *data], ""
    if command == "apply":
        _, body = document(rng)
        return ["apply", "-f", "-", *ns, *data], body
    words = [text(rng) for _ in range(rng.randint(0, 2))]
    return [rng.choice(["bogus", "--bogus", "get", "next", "-x", "help"]), *words], ""


@fuzz(1500)
@given(rng=st.randoms(use_true_random=True))
def test_any_command_line_fails_as_one_error_line_and_changes_nothing(
        store_dir: Path, rng: random.Random) -> None:
    args, stdin = command_line(rng, store_dir)
    before = revision(store_dir)
    ran = invoke(*args, stdin=stdin)
    case = f"{args} <<< {stdin!r}: {ran}"
    assert "Traceback" not in ran.err, case
    if ran.code == 0:
        assert ran.errors == [], case
        return
    assert ran.out == "", case
    assert len(ran.errors) == 1, case
    assert all(line.startswith(("error: ", "warning: ")) for line in ran.err.splitlines()), case
    assert len(ran.errors[0]) > len("error: ") + 5, case
    assert revision(store_dir) == before, case


# --- found by fuzzing: manifests that end in a traceback --------------------------------------


def one_error(sources: list[Source]) -> str:
    checked = check(sources, namespace="default", now=NOW)
    assert len(checked.errors) == 1, checked.errors
    assert checked.documents == []
    return checked.errors[0]


@pytest.mark.parametrize("body", [
    pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: &d {k: *d}\n",
                 id="map-in-itself"),
    pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata: &m {name: x, labels: *m}\n",
                 id="metadata-in-itself"),
    pytest.param("&a [*a]\n", id="list-in-itself"),
])
def test_a_self_referential_document_is_one_error(body: str) -> None:
    """YAML anchors let a node contain itself; walking it recursed until RecursionError."""
    assert one_error([Source("loop.yaml", body)]).startswith("loop.yaml: ")


def test_a_non_ascii_binary_data_value_is_one_error() -> None:
    """base64.b64decode raises ValueError, not binascii.Error, for a str with non-ASCII
    characters; validate caught only binascii.Error."""
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nbinaryData: {b: caf\u00e9}\n"
    assert "binaryData.b" in one_error([Source("cm.yaml", body)])


@pytest.mark.parametrize("body", [
    pytest.param('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {k: "\\ud800"}\n', id="data"),
    pytest.param(f'apiVersion: {API}\nkind: SympoziumSchedule\nmetadata: {{name: x}}\n'
                 'spec: {instanceRef: a, schedule: "@daily", task: "\\udc00 task"}\n', id="task"),
])
def test_a_lone_surrogate_is_one_error(body: str) -> None:
    """A YAML escape can make a lone surrogate, which no UTF-8 file or API server holds;
    the size check encoded the object to UTF-8 and raised UnicodeEncodeError."""
    one_error([Source("s.yaml", body)])


@pytest.mark.parametrize(("body", "field"), [
    pytest.param('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: "cm\\n"}\n', "metadata.name", id="name"),
    pytest.param('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: "default\\n"}\n',
                 "metadata.namespace", id="namespace"),
    pytest.param('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, labels: {"k\\n": v}}\n',
                 "metadata.labels", id="label-key"),
    pytest.param('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {"k\\n": v}\n', "data",
                 id="data-key"),
])
def test_a_trailing_newline_in_a_name_or_key_is_one_error(body: str, field: str) -> None:
    """The name, label and key patterns end in "$", which also matches before a final
    newline: ``apply`` stored a ConfigMap "cm\n" in namespace "default\n"
    (see test_spec_fuzz.py::test_a_trailing_newline_is_not_part_of_a_dns_name)."""
    assert names_field(one_error([Source("nl.yaml", body)]), field)


def test_a_label_key_with_an_empty_prefix_is_one_error() -> None:
    """"/a" splits into an empty prefix and "a"; the check skips an empty prefix, so the
    key passed, where Kubernetes says "prefix part must be non-empty"."""
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, labels: {/a: v}}\n"
    assert names_field(one_error([Source("l.yaml", body)]), "metadata.labels")


def test_an_integer_the_store_cannot_hold_is_refused_before_anything_is_applied(tmp_path: Path) -> None:
    """The checks take any JSON integer; the SQLite store (orjson) refuses one beyond 64
    bits when writing. ``apply`` had then already written the documents before it: a
    partial apply, and an error line naming neither the object nor the field."""
    data_dir = str(tmp_path / "data")
    body = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {k: v}\n---\n"
            f"apiVersion: {API}\nkind: SympoziumSchedule\nmetadata: {{name: hb}}\n"
            "spec: {instanceRef: alice, schedule: '@daily', task: t, "
            "successfulRunsHistoryLimit: 18446744073709551616}\n")

    ran = invoke("apply", "-f", "-", "--data-dir", data_dir, stdin=body)

    assert ran.code == 1, ran
    assert len(ran.errors) == 1, ran
    assert "successfulRunsHistoryLimit" in ran.errors[0], ran
    assert invoke("get", "cm", "--data-dir", data_dir).out == "", "the ConfigMap was applied"


def test_undecodable_stdin_is_one_error() -> None:
    """Under a strict UTF-8 stdin (a UTF-8 locale other than C.UTF-8, or
    PYTHONIOENCODING=utf-8:strict) reading it raised UnicodeDecodeError; the same bytes
    in a file are one error line."""
    stdin = io.TextIOWrapper(io.BytesIO(b"kind: x\xff\n"), encoding="utf-8", errors="strict")
    sources, errors = read_sources(["-"], stdin)
    assert sources == []
    assert len(errors) == 1
    assert errors[0].startswith("<stdin>: ")


@pytest.mark.parametrize("args", [
    pytest.param(("* * * * *", "--after", "9999-12-31T23:59:00Z"), id="cron-at-the-end"),
    pytest.param(("* * * * *", "--after", "0001-01-01T00:00:00Z"), id="cron-at-the-start"),
    pytest.param(("@every 8784h", "--count", "10000"), id="ten-thousand-leap-years"),
])
def test_next_past_the_end_of_time_is_not_a_traceback(args: tuple[str, ...]) -> None:
    """A fire time past year 9999 raised OverflowError (cronsim's, or datetime's in
    ``anchor + k * interval``), which nothing caught: ``next '@every 8784h' --count 10000``,
    both values within the documented limits, ended in a traceback. ``next_after`` is
    documented to return None for "never again"; past the calendar is that."""
    ran = invoke("next", *args)
    assert ran.code == 0 or len(ran.errors) == 1, ran


# --- a handful of real processes -------------------------------------------------------------------


def bomb(levels: int) -> str:
    """A few hundred bytes of YAML aliases that expand to 10**levels strings."""
    lines = ['  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  l{n}: &l{n} [" + ",".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, levels)]
    return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\nx-bomb:\n" + "\n".join(lines) + "\n"


PROCESS_CASES = {
    "garbage": (["apply", "-f", "-"], "\x00\x01{[: ]", {}),
    "broken-yaml": (["apply", "-f", "-"], "kind: ConfigMap\nmetadata: {name: x\n", {}),
    "bad-flag": (["next", "* * * * *", "--count", "0"], "", {}),
    "bad-zone": (["next", "@daily", "--tz", "Mars/Olympus"], "", {}),
    "undecodable-stdin": (["apply", "-f", "-"], "kind: x\udcff\n", {"PYTHONIOENCODING": "utf-8:strict"}),
    "self-reference": (["apply", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
                                               "data: &d {k: *d}\n", {}),
    # Ten million strings from 500 bytes: it must be refused, not expanded (minutes, gigabytes).
    "alias-bomb": (["apply", "-f", "-"], bomb(8), {}),
}
PROCESS_TIMEOUT = 8.0


def run_cli(args: list[str], stdin: str, env: dict[str, str], data_dir: Path) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "sympozium_schedule.cli.main", *args]
    if args[0] != "next":
        command += ["--data-dir", str(data_dir)]
    try:
        done = subprocess.run(command, input=stdin.encode("utf-8", "surrogateescape"),
                              capture_output=True, timeout=PROCESS_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return -1, "", f"(still running after {PROCESS_TIMEOUT:g}s: killed)"
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def processes(store_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Every case at once (each is a Python start-up; they need not wait for one another)."""
    env = dict(os.environ, SYMPOZIUM_DATA_DIR=str(tmp_path_factory.mktemp("nowhere")))
    before = revision(store_dir)
    with ThreadPoolExecutor(max_workers=len(PROCESS_CASES)) as pool:
        futures = {case: pool.submit(run_cli, args, stdin, env | extra, store_dir)
                   for case, (args, stdin, extra) in PROCESS_CASES.items()}
        results = {case: future.result() for case, future in futures.items()}
    assert revision(store_dir) == before
    return results


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(PROCESS_CASES))
def test_a_real_process_fails_as_one_error_line(processes: dict[str, tuple[int, str, str]],
                                                case: str) -> None:
    code, out, err = processes[case]
    assert "Traceback" not in err, err[-2000:]
    assert code > 0, (code, err[-2000:])
    assert out == ""
    assert len(err.splitlines()) == 1, err[-2000:]
    assert err.startswith("error: "), err
