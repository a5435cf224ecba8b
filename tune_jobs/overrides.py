"""Dotted-key overrides of a sweep spec from the command line: ``vidgan sweep SPEC train.lr=2e-4 seeds=[0,1]``.

Parsed by OmegaConf's dotlist (``DictConfig.merge_with_dotlist``): each value is read as YAML, as the spec
file is (``2e-4`` a float, ``[gp, zero_gp]`` a list, ``null`` None), dotted keys reach into mappings and list
items (``datasets.0.path=...``), and a list given whole replaces the file's list. Before any merge each key is
checked against the :class:`~tune_jobs.spec.SweepSpec` schema, so a typo fails naming the key and the nearest
valid ones (:mod:`difflib`); the merged mapping is then validated by the same pydantic schema as the file.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel

from tune_jobs.spec import SpecError, SweepSpec

#: the parent run's tag holding the overrides a sweep was started with (space-separated, as typed)
TAG_OVERRIDES = "vidgan.overrides"


def split(item: str) -> tuple[str, str]:
    """``key=value`` -> (key, value); SpecError when there is no ``=`` or no key."""
    key, eq, value = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise SpecError(f"override {item!r}: expected key=value with a dotted key of the spec (e.g. train.lr=2e-4)")
    return key, value


def check_value(item: str) -> None:
    """Raise SpecError when the value of ``item`` uses a YAML alias (``*name``): one override has nothing to
    share, and aliases of aliases expand a few hundred bytes into billions of items (an "alias bomb") before any
    check could see them. Read as events, the value costs time linear in its length; a value that is not valid
    YAML is left to the merge, which names the problem."""
    value = split(item)[1]
    try:
        for event in yaml.parse(value, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise SpecError(f"override {_shown(item)}: YAML aliases (*{event.anchor}) are not allowed in an "
                                "override; write the value out (quote it if it is text)")
    except yaml.YAMLError:
        return


#: the most values (mappings, lists and scalars, counted as written out) a spec may hold: a sweep spec holds
#: hundreds; YAML aliases of aliases can make a few hundred bytes stand for billions
MAX_VALUES = 100_000


def check_size(raw: object, source: str, limit: int = MAX_VALUES) -> None:
    """Raise SpecError when ``raw`` (a loaded YAML document, its aliases shared objects) holds more than ``limit``
    values once written out. Each shared object is counted once per use but walked once, so the count costs time
    linear in what the file wrote, never in what its aliases expand to."""
    sizes: dict[int, int] = {}

    def size(node: object) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else \
            node if isinstance(node, list) else []
        n = 1
        for child in children:
            n += size(child)
            if n > limit:
                break
        sizes[id(node)] = n
        return n

    try:
        too_many = size(raw) > limit
    except RecursionError:
        raise SpecError(f"{source}: nested too deeply; a sweep spec is a few levels of mappings and lists") from None
    if too_many:
        raise SpecError(f"{source}: holds over {limit} values once its YAML aliases are written out (aliases of "
                        "aliases?); a sweep spec holds hundreds")


def _shown(item: str, limit: int = 80) -> str:
    """``item`` quoted, shortened to ``limit`` characters."""
    return repr(item if len(item) <= limit else item[: limit - 3] + "...")


def _arms(annotation: Any) -> list[Any]:
    """The arms of a union annotation (``X | None`` -> [X]), else [annotation]; None dropped."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _container(annotation: Any) -> Any:
    """The arm of ``annotation`` that has keys (a pydantic model, a list or a dict), or None for a leaf."""
    for arm in _arms(annotation):
        if isinstance(arm, type) and issubclass(arm, BaseModel):
            return arm
        if typing.get_origin(arm) in (list, dict):
            return arm
    return None


def schema_keys(model: type[BaseModel] = SweepSpec, prefix: str = "") -> list[str]:
    """Every dotted key of the schema's models (not into lists and free mappings): the candidates of a typo."""
    keys = []
    for name, info in model.model_fields.items():
        keys.append(prefix + name)
        inner = _container(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            keys += schema_keys(inner, f"{prefix}{name}.")
    return keys


def nearest(key: str, candidates: Sequence[str], n: int = 3) -> list[str]:
    """The candidates closest to ``key`` (difflib's ratio, at least 0.6), best first."""
    return difflib.get_close_matches(key, candidates, n=n, cutoff=0.6)


def _by_leaf(name: str) -> list[str]:
    """Schema keys whose last part is (close to) ``name``: ``lr`` -> ``train.lr``, ``max_tt`` -> ``scheduler.max_t``."""
    keys = schema_keys()
    leaves = nearest(name, sorted({k.rsplit(".", 1)[-1] for k in keys}))
    return [k for leaf in leaves for k in keys if k.rsplit(".", 1)[-1] == leaf]


def check_key(key: str) -> None:
    """Raise SpecError unless ``key`` names a place in the spec's schema: a field of a model, an index of a
    list, or any key of a free mapping (``overrides.gp.penalty_weight``, ``search.space.lr.low``)."""
    node: Any = SweepSpec
    done: list[str] = []
    for part in key.split("."):
        inner = _container(node)
        here = ".".join(done)
        if inner is None:
            raise SpecError(f"override key {key!r}: {here} is a single value, it has no key {part!r}")
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            if part not in inner.model_fields:
                level = [f"{here}.{f}" if here else f for f in inner.model_fields]
                close = list(dict.fromkeys(nearest(key, level) + _by_leaf(part) + nearest(key, schema_keys())))[:3]
                hint = f"; nearest: {', '.join(close)}" if close else f"; keys here: {', '.join(level)}"
                raise SpecError(f"unknown override key {key!r}{hint}")
            node = inner.model_fields[part].annotation
        elif typing.get_origin(inner) is list:
            if not part.isdigit():
                raise SpecError(f"override key {key!r}: {here} is a list; give an item's index ({here}.0) or the "
                                f"whole list ({here}=[...])")
            node = typing.get_args(inner)[0]
        else:  # a mapping of free keys
            node = typing.get_args(inner)[1]
        done.append(part)


def apply(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The spec mapping ``raw`` with ``overrides`` (``key=value`` strings) applied, checked key by key first."""
    if not overrides:
        return raw
    check_size(raw, "the spec")  # before OmegaConf copies it whole
    for item in overrides:
        check_key(split(item)[0])
        check_value(item)
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        conf = OmegaConf.create(raw)
    except OmegaConfBaseException as exc:
        raise SpecError(f"the spec cannot take overrides: {' '.join(str(exc).split())}") from None
    for item in overrides:
        try:
            conf.merge_with_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            reason = " ".join(str(exc).split()).split(" full_key:")[0]
            raise SpecError(f"override {item!r}: {reason}") from None
    merged = OmegaConf.to_container(conf, resolve=False)  # `${...}` stays text: the spec has no interpolation
    assert isinstance(merged, dict)
    return merged


def diff(raw: dict[str, Any], effective: dict[str, Any], source: str) -> str:
    """A unified diff of the spec as written (``source``) and with the overrides applied, both as YAML."""
    before = yaml.safe_dump(raw, sort_keys=False).splitlines()
    after = yaml.safe_dump(effective, sort_keys=False).splitlines()
    lines = list(difflib.unified_diff(before, after, source, "with the overrides", lineterm="", n=1))
    return "\n".join(lines) if lines else "(the overrides change nothing)"
