"""Reading the YAML files MergeLab takes (study specs, mergekit configs) the one strict way: UTF-8,
bounded in size, a key given twice is an error, and aliases may not expand a small file into a huge
one (the "billion laughs"); every failure is one :class:`YamlFileError` naming the file. Study specs
turn it into a :class:`~mergelab.study.errors.SpecError`, mergekit imports into a MergekitImportError."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

#: the largest YAML file read (a study with hundreds of tasks is well under 1 MB)
MAX_BYTES = 1_000_000
#: the most nodes a document may expand to, aliases counted each time they are used
MAX_NODES = 200_000


class YamlFileError(ValueError):
    """A YAML file or text MergeLab will not read; ``problems`` lists why, one line each."""

    def __init__(self, problems: Sequence[str], source: str | None = None, what: str = "study spec"):
        self.problems = list(problems)
        self.source, self.what = source, what
        where = f"invalid {what} {source}" if source else f"invalid {what}"
        super().__init__(f"{where}: " + "; ".join(self.problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error, not 'last wins'."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (line {key_node.start_mark.line + 1}); each key may appear once",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_nodes(node, memo: dict) -> int:
    """How many nodes ``node`` stands for once every alias in it is expanded (aliased nodes are
    shared objects in the composed graph, so this counts them once per use, in linear time)."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a recursive alias counts once (YAML forbids it anyway)
        if isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_nodes(k, memo) + _expanded_nodes(v, memo) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_nodes(v, memo) for v in node.value)
    return memo[key]


def load_yaml(text: str, source: str | None = None, what: str = "study spec"):
    """Parse YAML text the one strict way — duplicate keys refused, no Python tags,
    at most :data:`MAX_BYTES` of text expanding to at most :data:`MAX_NODES` nodes; YamlFileError on
    failure."""
    if len(text) > MAX_BYTES:
        raise YamlFileError(
            [f"the YAML is {len(text):,} characters; MergeLab reads at most {MAX_BYTES:,}"], source, what
        )
    try:
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_nodes(node, {}) > MAX_NODES:
                raise YamlFileError(
                    [
                        f"the YAML expands to more than {MAX_NODES:,} values (aliases that repeat "
                        "other aliases?); MergeLab does not read it"
                    ],
                    source,
                    what,
                )
            return loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise YamlFileError([f"not valid YAML{at}: {' '.join(str(problem).split())}"], source, what) from None


def read_yaml_file(path: str | Path, what: str = "spec file") -> str:
    """The text of a YAML file, or one YamlFileError saying why it cannot be read: a folder, missing,
    larger than :data:`MAX_BYTES`, not UTF-8, unreadable."""
    path = Path(path)
    if path.is_dir():
        raise YamlFileError([f"{path} is a folder; give the {what} itself"])
    if not path.exists():
        raise YamlFileError([f"{what} {path} does not exist"])
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise YamlFileError([f"{path} is {size:,} bytes; MergeLab reads YAML files of at most {MAX_BYTES:,}"])
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlFileError(
            [f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#x} at offset {exc.start}); save it as UTF-8"]
        ) from None
    except OSError as exc:
        raise YamlFileError([f"cannot read {path}: {exc.strerror or exc}"]) from None
