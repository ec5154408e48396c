"""YAML to plain data plus the line of every key and item, for error messages.

PyYAML's ``safe_load`` forgets where things were, so the document is composed into
nodes (which keep their marks) and built here, one path at a time.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode

from monitor._problems import ConfigError, Document, Loc, Problem, field_path, quote, show

_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
# Aliases can make a small file expand without bound ("billion laughs"); a document
# without aliases never has more than about two nodes per character.
_SPARE_NODES = 100_000


def load_yaml(text: str, file: str) -> Document:
    """The document as dicts, lists and scalars, with the line of every path in it."""
    try:
        loader, root = _compose(text)
        if root is None:
            raise _fail(file, 1, "the file is empty; list the sites under sites:")
        builder = _Builder(loader, Document(file), budget=2 * len(text) + _SPARE_NODES)
        builder.document.data = builder.build(root, ())
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        message = f"character U+{exc.character:04X} is not allowed in YAML; remove it"
        raise _fail(file, line, message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        message = f"invalid YAML ({what}); correct the document at this line"
        raise _fail(file, mark.line + 1 if mark else None, message) from None
    except RecursionError:
        message = "the document is nested too deeply or an alias contains itself; flatten it"
        raise _fail(file, None, message) from None
    return builder.document


def _compose(text: str) -> tuple[SafeConstructor, Node | None]:
    # libyaml, where PyYAML has it, composes several times faster (a 20,000-site file:
    # 8.6 s -> 3.1 s to load); its error messages differ, so a document it rejects is read
    # again in pure Python, whose messages are the ones users (and the tests) see
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            loader = fast(text)
            return loader, loader.get_single_node()
        except yaml.YAMLError:
            pass
    loader = yaml.SafeLoader(text)
    return loader, loader.get_single_node()


def _fail(file: str, line: int | None, message: str) -> ConfigError:
    return ConfigError([Problem(file, line, "", message)])


class _Builder:
    def __init__(self, loader: SafeConstructor, document: Document, budget: int) -> None:
        self.loader = loader
        self.document = document
        self.budget = budget
        # the collections being built, to catch an alias inside the node it refers to
        self.open: set[int] = set()

    def build(self, node: Node, path: Loc) -> Any:
        self.budget -= 1
        if self.budget < 0:
            message = "aliases expand the document far beyond any real inventory; use fewer aliases"
            raise self._fail(node, message)
        self.document.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if node.tag not in _COLLECTION_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise self._fail(node, f"tag {tag} is not supported in an inventory; remove it")
        if id(node) in self.open:
            raise self._fail(node, "this node contains an alias of itself; remove that alias")
        self.open.add(id(node))
        if isinstance(node, MappingNode):
            built: Any = self._mapping(node, path)
        else:
            built = [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        self.open.discard(id(node))
        return built

    def _scalar(self, node: ScalarNode) -> Any:
        try:
            return self.loader.construct_object(node)
        except ValueError as exc:
            start = show(f"{node.value[:20]}…" if len(node.value) > 20 else node.value)
            # Python refuses to read more than 4300 digits into an int, with a technical message
            why = "far too large" if node.tag == _INT_TAG else f"not valid ({exc})"
            message = f"{start} is {why}; correct it, or quote it to keep it as text"
            raise self._fail(node, message) from None

    def _mapping(self, node: MappingNode, path: Loc) -> dict[str, Any]:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            key = _key(key_node)
            if key is None:
                self._problem(line, path, _not_text(key_node))
            elif key in first_line:
                message = (
                    f"key {show(key)} appears twice (first on line {first_line[key]}); keep one"
                )
                self._problem(line, (*path, key), message)
            else:
                first_line[key] = line
        # "<<: *anchor" merges come first, so keys written in the mapping itself win
        self.loader.flatten_mapping(node)
        pairs = {key: pair for pair in node.value if (key := _key(pair[0])) is not None}
        result: dict[str, Any] = {}
        for key, (key_node, value_node) in pairs.items():
            self.document.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key))
        return result

    def _problem(self, line: int, path: Loc, message: str) -> None:
        self.document.problems.append(Problem(self.document.file, line, field_path(path), message))

    def _fail(self, node: Node, message: str) -> ConfigError:
        return _fail(self.document.file, node.start_mark.line + 1, message)


def _key(node: Node) -> str | None:
    return str(node.value) if isinstance(node, ScalarNode) and node.tag == _STR_TAG else None


def _not_text(node: Node) -> str:
    if not isinstance(node, ScalarNode):
        return "a key must be plain text, not a list or mapping; write a name"
    kind, key = node.tag.rsplit(":", 1)[-1], quote(node.value)
    return f"YAML reads the key {key[1:-1]} as {kind}, not text; write it in quotes: {key}"
