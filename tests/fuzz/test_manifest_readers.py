"""The fast paths of reading and checking manifests against the reference ones.

``parse`` reads through libyaml (``_FastLoader``) and falls back to PyYAML's
pure-Python reader (``_Loader``) on any doubt; ``bulk.check_all`` checks a large
manifest in pieces on several processes and falls back to one pass on any error.
Each must give exactly what the reference gives: the same documents, the same
warnings, the same error lines.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sympozium_schedule.cli import bulk, manifest_files
from sympozium_schedule.cli.manifest_files import Source, parse
from sympozium_schedule.cli.validate import check

NOW = datetime(2026, 3, 1, tzinfo=UTC)

TRICKY = {
    "anchor without alias": "a: &x 1\nb: 2\n",
    "alias": "a: &x 1\nb: *x\n",
    "alias of a mapping": "a: &m {k: v}\nb: *m\n",
    "undefined alias": "a: *nope\n",
    "billion laughs": "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n",
    "merge key": "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n",
    "inline merge": "d:\n  <<: {x: 1}\n  y: 2\n",
    "timestamp stays text": "t: 2026-03-01T10:00:00Z\nd: 2026-03-01\n",
    "explicit timestamp": "t: !!timestamp 2026-03-01T10:00:00Z\n",
    "binary": "b: !!binary aGVsbG8=\n",
    "set": "s: !!set {a, b}\n",
    "omap": "o: !!omap [a: 1, b: 2]\n",
    "unknown tag": "x: !thing 1\n",
    "str tag on a mapping": "x: !!str {a: 1}\n",
    "escaped surrogate pair": 'e: "\\ud83d\\ude00"\n',
    "lone escaped surrogate": 'e: "\\ud800"\n',
    "astral escape": 'e: "\\U0001F600"\n',
    "yaml 1.1 scalars": "a: yes\nb: off\nc: 0o17\nd: 017\ne: 0x1f\nf: 1_000\ng: .inf\nh: -.nan\n"
                        "i: ~\nj: ''\nk: 1:20\nl: =\nm: 6.8523015e+5\n",
    "quoted scalars": "a: 'yes'\nb: \"1\"\nc: '~'\n",
    "non-string keys": "1: a\ntrue: b\nnull: c\n1.5: d\n",
    "complex key": "? [a, b]\n: c\n",
    "duplicate keys": "a: 1\na: 2\n",
    "block scalars": "a: |\n  one\n  two\nb: >-\n  folded\n  text\nc: |+\n  kept\n\n",
    "flow everything": "{a: [1, {b: c}], d: 'e'}\n",
    "documents": "---\na: 1\n---\n---\nb: 2\n...\n---\n",
    "empty": "",
    "comments only": "# nothing\n",
    "tabs": "a:\tb\n",
    "bom": "\ufeffa: 1\n",
    "control character": "a: b\x07\n",
    "nel": "a: b\x85c\n",
    "unclosed flow": "a: [1, 2\n",
    "bad indentation": "a:\n  b: 1\n c: 2\n",
    "directive": "%YAML 1.1\n---\na: 1\n",
    "tag directive": "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n",
    "deep nesting": "a: " + "[" * 60 + "]" * 60 + "\n",
    "marker in a block scalar": "a: |\n  text\n---\nb: 1\n",
}


def _reference(source: Source, monkeypatch: pytest.MonkeyPatch) -> tuple[list[object], list[str]]:
    with monkeypatch.context() as m:
        m.setattr(manifest_files, "_LIBYAML", False)
        return parse(source)


@pytest.mark.parametrize("case", TRICKY)
def test_the_fast_reader_reads_what_pyyaml_reads(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source = Source(f"{case}.yaml", TRICKY[case])
    assert parse(source) == _reference(source, monkeypatch)


def test_the_fast_reader_is_used_for_plain_manifests() -> None:
    """Not a tautology of the test above: the fast path must actually be taken."""
    text = "a: 1\nb: [x, 'y']\n---\nc: {d: 2.5}\n"
    assert manifest_files._load_fast(text) == [{"a": 1, "b": ["x", "y"]}, {"c": {"d": 2.5}}]
    for case in ("alias", "merge key", "escaped surrogate pair", "unclosed flow", "control character"):
        assert manifest_files._load_fast(TRICKY[case]) is None, case


def test_an_alias_bomb_is_refused_before_it_is_expanded() -> None:
    """Nine levels of ten aliases: a billion strings if built; refused at the first."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    text = "\n".join(lines) + "\n"
    assert manifest_files._load_fast(text) is None
    documents, [error] = parse(Source("bomb.yaml", text))
    assert documents == []
    assert "YAML aliases are not supported (found *a0)" in error


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=False), st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(docs=st.lists(_values, min_size=1, max_size=3), flow=st.sampled_from([None, True, False]),
       unicode=st.booleans())
def test_any_dumped_document_reads_the_same_both_ways(docs: list[object], flow: bool | None,
                                                      unicode: bool) -> None:
    text = yaml.safe_dump_all(docs, default_flow_style=flow, allow_unicode=unicode)
    with pytest.MonkeyPatch.context() as m:
        expected = parse(Source("x", text))
        m.setattr(manifest_files, "_LIBYAML", False)
        assert parse(Source("x", text)) == expected


# Pieces of YAML's syntax: random texts of them are mostly invalid, and the two
# readers must then agree on that too (libyaml and PyYAML part ways on tabs, "!",
# "|#" and "?" in flow: manifest_files leaves those to PyYAML).
_SYNTAX = st.sampled_from([*"ab1: -[]{},?'\"\n#&*!|>%@`\t.=~<\\\r0é😀", "---", "...", "\n- ",
                           ": ", "\n  ", "\\u00e9", "!!str ", "!!int ", "<<: ", "? ", "yes",
                           "0o7", ".inf", "*a", "&a "])


@settings(max_examples=1500, deadline=None)
@given(text=st.lists(_SYNTAX, max_size=18).map("".join))
def test_any_text_reads_the_same_both_ways(text: str) -> None:
    def outcome() -> object:
        try:
            return parse(Source("x", text))
        except Exception as exc:  # "!!int a": PyYAML's int() raises; so must the fast path
            return repr(exc)

    with pytest.MonkeyPatch.context() as m:
        expected = outcome()
        m.setattr(manifest_files, "_LIBYAML", False)
        assert outcome() == expected


def _schedule(i: int, schedule: str = "@every 1h") -> str:
    return yaml.safe_dump({"apiVersion": "sympozium.ai/v1alpha1", "kind": "SympoziumSchedule",
                           "metadata": {"name": f"s-{i}"},
                           "spec": {"instanceRef": "alice", "schedule": schedule, "task": "Go."}})


# Sympozium's AgentRun sample shape: accepted, with warnings (checked against its CRD).
_RUN = yaml.safe_dump({"apiVersion": "sympozium.ai/v1alpha1", "kind": "AgentRun",
                       "metadata": {"name": "r-1"}, "spec": {"agentID": "primary"}})


def test_cut_keeps_every_character_and_cuts_only_at_markers() -> None:
    text = "---\n".join(_schedule(i) for i in range(40))
    pieces = bulk.cut(Source("m", text), 4, len(text))
    assert len(pieces) == 4
    assert "".join(p.text for p in pieces) == text
    assert all(p.text.startswith("---\n") for p in pieces[1:])
    assert bulk.cut(Source("m", "%YAML 1.1\n" + text), 4, len(text)) == [Source("m", "%YAML 1.1\n" + text)]


@pytest.mark.parametrize("bad", [None, "61 * * * *", "yaml"])
def test_checking_in_pieces_gives_what_one_pass_gives(bad: str | None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [_schedule(i) for i in range(60)]
    docs[10] = _RUN + "---\n" + docs[10]
    if bad == "yaml":
        docs[50] = docs[50].replace("spec:\n", "spec:\n  x: [\n")
    elif bad is not None:
        docs[50] = _schedule(50, bad)
    sources = [Source("a.yaml", "---\n".join(docs)), Source("b.yaml", "---\n".join(docs[:20]))]
    expected = check(sources, namespace="default", now=NOW)
    monkeypatch.setattr(bulk, "PARALLEL_MIN_CHARS", 0)
    got = bulk.check_all(sources, namespace="default", now=NOW, workers=3)
    assert (got.documents, got.warnings, got.errors) == (expected.documents, expected.warnings,
                                                         expected.errors)
    assert any(w.startswith("a.yaml: AgentRun") for w in expected.warnings)
    assert any(w.startswith("b.yaml: AgentRun") for w in expected.warnings)
    assert bool(expected.errors) == (bad is not None)
    if bad is None:
        assert len(got.documents) == 82
