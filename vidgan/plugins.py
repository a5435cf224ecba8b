"""Plug-ins found two ways: the modules of a package folder, and the entry points of a group.

What the loss variants (:mod:`vidgan.loss_variants`, group ``vidgan.variants``) and the source kinds of
``vidgan ingest`` (:mod:`vidgan.ingest.kinds`, group ``vidgan.ingest_sources``) are found by: a module
``name.py`` in the folder (names starting with ``_`` are helpers, not plug-ins) or an entry point ``name =
package.module`` of another installed package. A name found twice is refused.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata
from types import ModuleType


class PluginError(ValueError):
    """A plug-in that cannot be registered: a name twice, or a module that lacks what its kind needs."""


def discover(package: ModuleType, group: str, what: str = "plug-in") -> dict[str, ModuleType]:
    """The plug-in modules by name: ``package``'s own modules (sorted), then those of the entry points of
    ``group``. PluginError when an entry point takes a name already taken."""
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found[info.name] = importlib.import_module(f"{package.__name__}.{info.name}")
    for ep in metadata.entry_points(group=group):
        if ep.name in found:
            raise PluginError(f"{what} {ep.name!r} of entry point group {group} is already defined by "
                              f"{found[ep.name].__name__}")
        found[ep.name] = ep.load()
    return found
