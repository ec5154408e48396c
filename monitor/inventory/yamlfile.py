"""YAML to plain data plus the line of every key and item, for error messages.

PyYAML's ``safe_load`` forgets where things were, so the document is composed into
nodes (which keep their marks) and built here, one path at a time. Both steps are
bounded (``monitor.inventory.limits``): the nodes are composed here from the parser's events,
without recursion, so that nesting, long values, long lists and the node count are
refused where they start, before they cost memory; building counts the nodes that
aliases and merges add ("billion laughs") and how deep they nest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from monitor.inventory import limits
from monitor.inventory.problems import ConfigError, Document, Loc, Problem, field_path, quote, show

_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# YAML 1.1 reads a plain "=" as the "value" key; PyYAML's merging turns it back into text
_VALUE_TAG = "tag:yaml.org,2002:value"
_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
# the scalars whose resolved tag the composer remembers: up to this long, this many
_RESOLVED_CHARS = 64
_RESOLVED_VALUES = 4096

if TYPE_CHECKING:
    # CSafeLoader exists only where PyYAML was built with libyaml
    Loader = yaml.SafeLoader | yaml.CSafeLoader


def load_yaml(text: str, file: str) -> Document:
    """The document as dicts, lists and scalars, with the line of every path in it."""
    _check_text(text, file)
    try:
        loader, root, written = _compose(text, file)
        if root is None:
            raise _fail(file, 1, "the file is empty; list the sites under sites:")
        budget = 2 * written + limits.ALIAS_SPARE_NODES
        builder = _Builder(loader, Document(file), budget)
        builder.document.data = builder.build(root, ())
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        message = f"character U+{exc.character:04X} is not allowed in YAML; remove it"
        raise _fail(file, line, message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        message = f"invalid YAML ({what}); correct the document at this line"
        raise _fail(file, mark.line + 1 if mark else 1, message) from None
    return builder.document


def _check_text(text: str, file: str) -> None:
    if len(text) > limits.MAX_FILE_BYTES:
        line = text.count("\n", 0, limits.MAX_FILE_BYTES) + 1
        message = (
            f"the inventory is longer than {limits.MAX_FILE_BYTES:,} characters (it passes "
            "that on this line); check it is the right file, or split the sites into shards"
        )
        raise _fail(file, line, message)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # only a str built in Python holds these: a file's bytes are decoded strictly
        line = text.count("\n", 0, exc.start) + 1
        message = f"character U+{ord(text[exc.start]):04X} is not allowed in YAML; remove it"
        raise _fail(file, line, message) from None


def _compose(text: str, file: str) -> tuple[Loader, Node | None, int]:
    # libyaml, where PyYAML has it, parses several times faster (a 20,000-site file:
    # 8.6 s -> 3.1 s to load); its error messages differ, so a document it rejects is read
    # again in pure Python, whose messages are the ones users (and the tests) see, unless
    # that would take seconds
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            loader = fast(text)
            return (loader, *_Composer(loader, file).document())
        except yaml.YAMLError:
            if len(text) > limits.MAX_RETOLD_CHARS:
                raise
    loader = yaml.SafeLoader(text)
    return (loader, *_Composer(loader, file).document())


def _fail(file: str, line: int, message: str) -> ConfigError:
    return ConfigError([Problem(file, line, "", message)])


class _Composer:
    """PyYAML's composer (events -> nodes), iterative and within ``monitor.inventory.limits``."""

    def __init__(self, loader: Loader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.written = 0
        self.anchors: dict[str, Node] = {}
        self.resolve: Callable[[type[Node], str | None, Any], str] = loader.resolve
        self.resolved: dict[tuple[str, tuple[bool, bool]], str] = {}

    def document(self) -> tuple[Node | None, int]:
        """The single document's root node (None if the stream is empty), and its node count."""
        loader = self.loader
        loader.get_event()  # stream start
        if loader.check_event(StreamEndEvent):
            return None, 0
        loader.get_event()  # document start
        root = self._node()
        loader.get_event()  # document end
        if not loader.check_event(StreamEndEvent):
            event: Any = loader.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream", root.start_mark,
                "but found another document", event.start_mark)
        return root, self.written

    def _node(self) -> Node:
        get_event = self.loader.get_event
        open_nodes: list[CollectionNode] = []
        # per open mapping, its key that waits for a value
        keys: list[Node | None] = []
        while True:
            event: Any = get_event()
            # exact types, one test per event: the loop runs for every value of the file
            kind = type(event)
            node: Node
            if kind is ScalarEvent:
                node = self._scalar(event)
            elif kind is SequenceEndEvent or kind is MappingEndEvent:
                node = open_nodes.pop()
                keys.pop()
                node.end_mark = event.end_mark
            elif kind is AliasEvent:
                if event.anchor not in self.anchors:
                    raise yaml.composer.ComposerError(
                        None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
                node = self.anchors[event.anchor]
            else:
                open_nodes.append(self._collection(event, len(open_nodes)))
                keys.append(None)
                continue
            if not open_nodes:
                return node
            parent = open_nodes[-1]
            if len(parent.value) >= limits.MAX_SITES:
                raise self._refuse(parent, (
                    f"more than {limits.MAX_SITES:,} items are listed here, more than the sites "
                    "one vcmon handles; split the inventory into shards, one vcmon each"))
            if type(parent) is SequenceNode:
                parent.value.append(node)
            elif keys[-1] is None:
                keys[-1] = node
            else:
                parent.value.append((keys[-1], node))
                keys[-1] = None

    def _count(self, event: Any) -> None:
        self.written += 1
        if self.written > limits.MAX_NODES:
            raise self._refuse(event, (
                f"the document holds more than {limits.MAX_NODES:,} keys, values and items, "
                f"more than {limits.MAX_SITES:,} sites need; check it is the right file, or "
                "split the sites into shards"))
        if event.anchor is not None and event.anchor in self.anchors:
            raise yaml.composer.ComposerError(
                f"found duplicate anchor {event.anchor!r}; first occurrence",
                self.anchors[event.anchor].start_mark, "second occurrence", event.start_mark)

    def _scalar(self, event: Any) -> ScalarNode:
        self._count(event)
        value = event.value
        if len(value) > limits.MAX_SCALAR_CHARS:
            raise self._refuse(event, (
                f"a value of {len(value):,} characters starts here, longer than the "
                f"{limits.MAX_SCALAR_CHARS:,} vcmon accepts; shorten it, or close the "
                "quote left open"))
        if not value.isascii() and _has_surrogate(value):
            raise self._refuse(event, (
                f"{quote(value[:40])} holds an escape \\uD800 to \\uDFFF, half of a "
                "UTF-16 surrogate pair and not a character; write the character itself"))
        tag = event.tag
        if tag is None or tag == "!":
            tag = self._resolve_scalar(value, event.implicit)
        node = ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style)
        if event.anchor is not None:
            self.anchors[event.anchor] = node
        return node

    def _resolve_scalar(self, value: str, implicit: tuple[bool, bool]) -> str:
        # the resolver tries its regular expressions on every value; keys and the like
        # repeat (id:, name:, tier: commune at each site), so short ones are remembered
        if len(value) > _RESOLVED_CHARS:
            return self.resolve(ScalarNode, value, implicit)
        key = (value, implicit)
        tag = self.resolved.get(key)
        if tag is None:
            tag = self.resolve(ScalarNode, value, implicit)
            if len(self.resolved) < _RESOLVED_VALUES:
                self.resolved[key] = tag
        return tag

    def _collection(self, event: Any, depth: int) -> CollectionNode:
        self._count(event)
        if depth >= limits.MAX_DEPTH:
            raise self._refuse(event, (
                f"the document nests more than {limits.MAX_DEPTH} levels deep here, where "
                "an inventory needs about 6; flatten it"))
        kind = MappingNode if type(event) is MappingStartEvent else SequenceNode
        assert isinstance(event, (MappingStartEvent, SequenceStartEvent))
        # PyYAML's stubs know only the pure-Python marks, not libyaml's
        start: Any = event.start_mark
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolve(kind, None, event.implicit)
        node = kind(tag, [], start, None, flow_style=event.flow_style)
        if event.anchor is not None:
            self.anchors[event.anchor] = node
        return node

    def _refuse(self, at: Any, message: str) -> ConfigError:
        return _fail(self.file, at.start_mark.line + 1, message)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _Builder:
    def __init__(self, loader: Loader, document: Document, budget: int) -> None:
        self.loader = loader
        self.document = document
        self.budget = budget
        # aliases and merges nest the built data deeper than the document is written
        self.depth = 0
        # the collections being built, to catch an alias inside the node it refers to
        self.open: set[int] = set()

    def build(self, node: Node, path: Loc) -> Any:
        self._spend(node)
        self.document.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if node.tag not in _COLLECTION_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise self._fail(node, f"tag {tag} is not supported in an inventory; remove it")
        self._enter(node)
        if isinstance(node, MappingNode):
            built: Any = self._mapping(node, path)
        else:
            built = [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        self._leave(node)
        return built

    def _spend(self, node: Node) -> None:
        self.budget -= 1
        if self.budget < 0:
            message = "aliases expand the document far beyond any real inventory; use fewer aliases"
            raise self._fail(node, message)

    def _enter(self, node: Node) -> None:
        if id(node) in self.open:
            raise self._fail(node, "this node contains an alias of itself; remove that alias")
        self.depth += 1
        if self.depth > limits.MAX_DEPTH:
            message = (f"aliases here nest the data more than {limits.MAX_DEPTH} levels deep; "
                       "use fewer aliases inside aliased nodes")
            raise self._fail(node, message)
        self.open.add(id(node))

    def _leave(self, node: Node) -> None:
        self.open.discard(id(node))
        self.depth -= 1

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
        merged: list[Node] = []
        pairs: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)
                continue
            line = key_node.start_mark.line + 1
            key = _key(key_node)
            if key is None:
                self._problem(line, path, _not_text(key_node))
                continue
            if key in first_line:
                message = (
                    f"key {show(key)} appears twice (first on line {first_line[key]}); keep one"
                )
                self._problem(line, (*path, key), message)
            else:
                first_line[key] = line
            pairs[key] = (key_node, value_node)
        # "<<: *anchor" merges come first, so keys written in the mapping itself win
        result = self._merge(merged, path)
        for key, (key_node, value_node) in pairs.items():
            self.document.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key))
        return result

    def _merge(self, values: list[Node], path: Loc) -> dict[str, Any]:
        """The keys that ``<<:`` merges bring in (YAML 1.1 merge key: earlier mappings win)."""
        sources: list[MappingNode] = []
        for value in values:
            items = value.value if isinstance(value, SequenceNode) else [value]
            for source in items:
                if not isinstance(source, MappingNode):
                    message = ("<< merges a mapping or a list of mappings, e.g. <<: *defaults; "
                               "correct the value after <<")
                    raise self._fail(source, message)
                sources.append(source)
        result: dict[str, Any] = {}
        for source in reversed(sources):
            # an empty mapping merged twice at each of 60 levels costs no node, but 2**60 merges
            self._spend(source)
            self._enter(source)
            result.update(self._mapping(source, path))
            self._leave(source)
        return result

    def _problem(self, line: int, path: Loc, message: str) -> None:
        self.document.problems.append(Problem(self.document.file, line, field_path(path), message))

    def _fail(self, node: Node, message: str) -> ConfigError:
        return _fail(self.document.file, node.start_mark.line + 1, message)


def _key(node: Node) -> str | None:
    text = isinstance(node, ScalarNode) and node.tag in (_STR_TAG, _VALUE_TAG)
    return str(node.value) if text else None


def _not_text(node: Node) -> str:
    if not isinstance(node, ScalarNode):
        return "a key must be plain text, not a list or mapping; write a name"
    kind, key = node.tag.rsplit(":", 1)[-1], quote(node.value)
    return f"YAML reads the key {key[1:-1]} as {kind}, not text; write it in quotes: {key}"
