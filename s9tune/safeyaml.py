"""YAML for files a user hands s9tune (configs, search spaces, --set values): PyYAML's safe
loader, bounded. An alias bomb ("billion laughs") costs nothing to parse but explodes when
anything walks the result, and a deeply nested list overflows the parser's recursion; both are
refused before construction, as is a document over YAML_MAX_BYTES. A key given twice in one
mapping is refused too: PyYAML would keep the last one silently, so a config could say one
thing to its reader and another to s9tune."""

from __future__ import annotations

from typing import Any

import yaml

from s9tune.errors import shown

YAML_MAX_BYTES = 1024 * 1024  # the shipped files are under 2 KB
YAML_MAX_DEPTH = 32  # a search space nests 3 deep
YAML_MAX_NODES = 100_000  # values once aliases are expanded


class YAMLLimitError(ValueError):
    """The document is bigger, deeper or more aliased than any config s9tune reads."""


class YAMLDuplicateKeyError(YAMLLimitError):
    """A mapping names the same key twice."""

    def __init__(self, key: object, first_line: int, line: int) -> None:
        where = f"line {line}" if first_line == line else f"lines {first_line} and {line}"
        super().__init__(f"the key {shown(key, 40)} appears twice ({where}); keep one")
        self.key, self.line = key, line


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise YAMLLimitError(f"nested deeper than {YAML_MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # the explicit keys only: a merge key (`<<: *base`) may be overridden, as YAML intends
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise YAMLDuplicateKeyError(key, seen[key], line)
                seen[key] = line
            except TypeError:
                continue  # unhashable: the constructor below refuses it
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Values in the document with every alias expanded (memoised: linear in its nodes)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise YAMLLimitError("an alias refers to itself (a recursive structure)")
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(n, memo, active) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, active) + _expanded_size(v, memo, active) for k, v in node.value)
    active.discard(key)
    memo[key] = size
    if size > YAML_MAX_NODES:
        raise YAMLLimitError(f"more than {YAML_MAX_NODES:,} values once its aliases are expanded")
    return size


def load(text: str) -> Any:
    """Like yaml.safe_load; raises yaml.YAMLError for bad syntax, YAMLLimitError past the limits."""
    if len(text) > YAML_MAX_BYTES:
        raise YAMLLimitError(f"larger than {YAML_MAX_BYTES // 1024} KiB")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        try:
            return loader.construct_document(node)
        except YAMLLimitError:
            raise
        except ValueError as exc:  # e.g. an integer of more digits than Python converts (4,300)
            raise YAMLLimitError(f"a value Python cannot read ({str(exc)[:60]})") from None
    finally:
        loader.dispose()
