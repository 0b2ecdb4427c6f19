"""Reading manifests: the text behind each ``-f`` (a file, a directory of them, stdin),
and its YAML documents as Kubernetes would read them (JSON values only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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


def parse(source: Source) -> tuple[list[object], list[str]]:
    """The documents of a multi-document YAML (or JSON) text; empty ones skipped."""
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
