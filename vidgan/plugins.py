"""Plug-ins found two ways: the modules of a package folder, and the entry points of a group.

What the loss variants (:mod:`vidgan.loss_variants`, group ``vidgan.variants``) and the source kinds of
``vidgan ingest`` (:mod:`vidgan.ingest.kinds`, group ``vidgan.ingest_sources``) are found by: a module
``name.py`` in the folder (names starting with ``_`` are helpers, not plug-ins) or an entry point ``name =
package.module`` of another installed package.

A broken plug-in costs its own name only: an entry point that cannot be imported (it raises, names a missing
module), is not a module, takes a name already taken (a built-in's or another plug-in's), or lacks what its kind
needs is left out with one warning on stderr naming it and its package; everything else works. The package's own
modules are part of vidgan: one of them that is broken is a bug, and raises.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from importlib import metadata
from types import ModuleType


class PluginError(ValueError):
    """A plug-in that cannot be registered: a name twice, or a module that lacks what its kind needs."""


#: the warnings already given in this process (each is given once)
_WARNED: set[str] = set()
#: the plug-in modules by id: their entry point's package, for the warnings of later checks (:func:`skip`)
_ORIGIN: dict[int, str] = {}


def warn(message: str) -> None:
    """One line on stderr, ``vidgan: warning: MESSAGE``, once per process."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"vidgan: warning: {' '.join(message.split())}", file=sys.stderr)


def _package(ep: metadata.EntryPoint) -> str:
    """The installed package (distribution) that declares ``ep``, as pip names it."""
    dist = getattr(ep, "dist", None)
    return f"package {dist.name}" if dist is not None and getattr(dist, "name", None) else "an unknown package"


def origin(module: ModuleType) -> str | None:
    """``plug-in 'x' (entry point x = mod.x of package P)`` for a plug-in module, None for a built-in one."""
    return _ORIGIN.get(id(module))


def skip(module: ModuleType, what: str, why: str) -> None:
    """Refuse ``module`` (:class:`PluginError`) when it is built in, else warn that the plug-in is left out."""
    where = origin(module)
    if where is None:
        raise PluginError(f"{what} module {module.__name__} {why}")
    warn(f"{what} {where} left out: {why}")


def discover(package: ModuleType, group: str, what: str = "plug-in",
             check: Callable[[ModuleType], str | None] | None = None) -> dict[str, ModuleType]:
    """The plug-in modules by name: ``package``'s own modules (sorted), then those of the entry points of
    ``group``. ``check(module)`` says what a module lacks (None when nothing): a built-in module that lacks
    something raises :class:`PluginError`; an entry point that cannot be loaded, is not a module, takes a name
    already taken or lacks something is left out with one warning naming it and its package."""
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            why = check(module) if check else None
            if why:
                raise PluginError(f"{what} module {module.__name__} {why}")
            found[info.name] = module
    for ep in metadata.entry_points(group=group):
        where = f"{ep.name!r} (entry point {ep.name} = {ep.value} of {_package(ep)})"
        if ep.name in found:
            taken = origin(found[ep.name]) or f"the built-in {found[ep.name].__name__}"
            warn(f"{what} plug-in {where} left out: the name is already taken by {taken}")
            continue
        try:
            module = ep.load()
        except Exception as e:  # noqa: BLE001 - any failure of someone else's import costs that plug-in only
            detail = " ".join(str(e).split())[:200]
            warn(f"{what} plug-in {where} left out: it cannot be imported ({type(e).__name__}: {detail})")
            continue
        if not isinstance(module, ModuleType):
            warn(f"{what} plug-in {where} left out: it names an object of type {type(module).__name__}, not a module")
            continue
        why = check(module) if check else None
        if why:
            warn(f"{what} plug-in {where} left out: {why}")
            continue
        _ORIGIN[id(module)] = f"plug-in {where}"
        found[ep.name] = module
    return found
