"""Reading manifests: the text behind each ``-f`` (a file, a directory of them, stdin),
and its YAML documents as Kubernetes would read them (JSON values only)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "<stdin>"


@dataclass(frozen=True, slots=True)
class Source:
    name: str  # the path as given, or <stdin>
    text: str


def read_sources(paths: Sequence[str], stdin: IO[str]) -> tuple[list[Source], list[str]]:
    """The text of every ``-f`` argument: a file, a directory's manifests
    (``*.yaml``, ``*.yml``, ``*.json``, not recursive) or ``-`` for stdin."""
    sources: list[Source] = []
    errors: list[str] = []
    stdin_read = False
    for given in paths:
        if given == "-":
            if not stdin_read:
                stdin_read = True
                try:
                    sources.append(Source(STDIN, stdin.read()))
                except (OSError, UnicodeDecodeError) as exc:
                    errors.append(f"{STDIN}: cannot read it ({exc})")
            continue
        path = Path(given)
        try:
            if path.is_dir():
                files = sorted(p for p in path.iterdir()
                               if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES)
                if not files:
                    errors.append(f"{given}: no manifests (*.yaml, *.yml, *.json) in this directory")
                sources.extend(Source(str(p), p.read_text()) for p in files)
            else:
                sources.append(Source(given, path.read_text()))
        except FileNotFoundError:
            errors.append(f"{given}: no such file or directory")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{given}: cannot read it ({getattr(exc, 'strerror', None) or exc})")
    return sources, errors


class _Loader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: an unquoted ``2026-03-01T10:00:00Z`` stays a
    string (PyYAML would make it a datetime, which is not JSON). Aliases (``*name``)
    are refused: a self-reference cannot be JSON, and a few nested aliases expand to
    gigabytes (a "billion laughs" file); manifests do not need them."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases are not supported (found *{event.anchor})",
                event.start_mark)
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _pairs_joined(value: object) -> object:
    """PyYAML reads an escaped UTF-16 pair ("\\ud83d\\ude00", as JSON writes emoji) as two
    lone surrogates; join such pairs as JSON does. A surrogate left alone stays, and is
    refused later with the field's name."""
    if isinstance(value, str):
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
        return value
    if isinstance(value, dict):
        return {_pairs_joined(k): _pairs_joined(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pairs_joined(v) for v in value]
    return value


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
# The scalar tags a manifest's plain values resolve to, built by PyYAML's own constructors.
_SCALARS = {f"tag:yaml.org,2002:{name}": getattr(yaml.SafeLoader, f"construct_yaml_{name}")
            for name in ("int", "float", "bool", "null")}


class _Fallback(Exception):
    """Not for the fast reader: the text is read again by :class:`_Loader`."""


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The same reading at libyaml's speed, for the common case (a large file is
    mostly this: ``apply -f`` of 100,000 objects spent 60 % of its time in PyYAML's
    pure-Python scanner). libyaml (PyYAML's C binding) parses and composes the nodes,
    with :class:`_Loader`'s resolvers; :meth:`build` turns them into plain values for
    the tags a manifest holds (mappings, sequences, strings, and ints, floats,
    booleans and nulls by PyYAML's own constructors). Anything else (another tag, a
    merge key ``<<``), an alias (a node met twice: libyaml's composer shares the
    anchored node) or any error raises, and the text is read again by
    :class:`_Loader`, so every value and every message is the reference reader's."""

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        """BaseResolver.resolve, less what it does for path resolvers (there are none):
        called for every node, it was a fifth of the reading."""
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, regexp in _IMPLICIT.get(value[:1], _WILDCARD):
                    if regexp.match(value):
                        return str(tag)
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        """No path resolvers: nothing to track (PyYAML's checks that on every node)."""

    def ascend_resolver(self) -> None:
        """As descend_resolver."""

    def documents(self, *, anchors: bool) -> list[object]:
        """``anchors``: whether the text may define one (an alias without one is an
        error of libyaml's composer already), so whether to look for shared nodes:
        each is refused when it is met again, before it is built twice (a "billion
        laughs" file would otherwise be expanded)."""
        out: list[object] = []
        while self.check_node():
            doc = self.build(self.get_node(), set() if anchors else None)
            if doc is not None:
                out.append(doc)
        return out

    def build(self, node: yaml.Node, seen: set[yaml.Node] | None) -> object:
        if seen is not None:
            if node in seen:
                raise _Fallback("an alias")
            seen.add(node)
        cls, tag = node.__class__, node.tag
        if cls is yaml.ScalarNode:
            if tag == _STR:
                return node.value
            construct = _SCALARS.get(tag)
            if construct is None:
                raise _Fallback(tag)
            return construct(self, node)
        if cls is yaml.MappingNode and tag == _MAP:
            return {self.build(key, seen): self.build(value, seen) for key, value in node.value}
        if cls is yaml.SequenceNode and tag == _SEQ:
            return [self.build(item, seen) for item in node.value]
        raise _Fallback(tag)


_FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
# By a plain scalar's first character ("" for an empty one), as BaseResolver looks them up.
_WILDCARD = list(_Loader.yaml_implicit_resolvers.get(None, []))
_IMPLICIT = {first: list(resolvers) + _WILDCARD
             for first, resolvers in _Loader.yaml_implicit_resolvers.items() if first is not None}
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
# Where libyaml reads differently (found by comparing the two on random texts,
# tests/fuzz/test_manifest_readers.py): a tab (libyaml takes it as a space where
# PyYAML refuses it), the non-specific tag "!" (PyYAML resolves "! 1" to an int,
# libyaml keeps a string), a directive line ("%YAML", "%TAG"), a comment right
# after a block scalar's header ("|#": PyYAML refuses it), and a "?" where a flow
# collection may be (PyYAML takes it as a key there, libyaml only before a space).
_BLOCK_HEADER_COMMENT = re.compile(r"[|>][-+0-9]*#")
_DIRECTIVE = re.compile(r"^%", re.MULTILINE)


def _libyaml_differs(text: str) -> bool:
    """Each pattern searched only when its rare character is there at all: over a
    40 MB file a search costs a tenth of a second or more."""
    return ("\t" in text
            or ("!" in text and _tag_alone(text))
            or ("%" in text and bool(_DIRECTIVE.search(text)))
            or ("#" in text and bool(_BLOCK_HEADER_COMMENT.search(text)))
            or ("?" in text and ("[" in text or "{" in text)))


def _tag_alone(text: str) -> bool:
    """A "!" with a separator (or the text's edge) on both sides."""
    at = text.find("!")
    while at != -1:
        before = text[at - 1] if at else " "
        after = text[at + 1] if at + 1 < len(text) else " "
        if (before.isspace() or before in "[]{},") and (after.isspace() or after in "[]{},"):
            return True
        at = text.find("!", at + 1)
    return False


def _unprintable(text: str) -> bool:
    """What PyYAML's reader refuses before parsing (its NON_PRINTABLE): for ASCII
    text, a control character, found by bytes.translate (the regular expression took
    0.2 s over 40 MB)."""
    if text.isascii():
        return bool(text.encode("ascii").translate(None, _ASCII_PRINTABLE))
    return bool(_NON_PRINTABLE.search(text))


_ASCII_PRINTABLE = b"\t\n\r" + bytes(range(0x20, 0x7F))
_LIBYAML = hasattr(yaml, "CSafeLoader") and not yaml.SafeLoader.yaml_path_resolvers


def _load_fast(text: str) -> list[object] | None:
    """Every document of ``text`` read through :class:`_FastLoader`, or None when it
    must be read by :class:`_Loader` after all: on any error (so each message is
    exactly the one the pure-Python reader gives, with its line and column), on what
    the fast reader leaves to it, and on text that reader refuses before parsing
    (characters outside YAML's printable set: libyaml draws that set slightly
    differently). Without libyaml, None."""
    if not _LIBYAML or _unprintable(text) or _libyaml_differs(text):
        return None
    loader = _FastLoader(text)
    try:
        return loader.documents(anchors="&" in text)
    except Exception:  # any doubt: the reference reader decides
        return None
    finally:
        loader.dispose()


def parse(source: Source) -> tuple[list[object], list[str]]:
    """The documents of a multi-document YAML (or JSON) text; empty ones skipped."""
    fast = _load_fast(source.text)
    if fast is not None:
        # libyaml refuses an escaped surrogate ("\\ud83d"), so no pair is left to join.
        return fast, []
    documents: list[object] = []
    try:
        for doc in yaml.load_all(source.text, Loader=_Loader):
            if doc is not None:
                documents.append(_pairs_joined(doc))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = ": ".join(p for p in (exc.context, exc.problem) if p)
        return documents, [f"{source.name}: {where}invalid YAML ({what})"]
    except yaml.YAMLError as exc:
        return documents, [f"{source.name}: invalid YAML: {exc}"]
    return documents, []
