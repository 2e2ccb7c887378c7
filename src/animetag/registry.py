"""Named plug-ins, as timm registers its models: a backbone, a loss or a threshold policy is
one function registered under a name where it is defined. The CLI's choices, the notebooks'
dropdowns and the docs are built from the names; a name is checked where it is used, and an
unknown one is an error that lists the known ones.

The built-in plug-ins live in `animetag.model.architecture`, `animetag.model.losses`, `animetag.model.policies` and
`animetag.data.danbooru` (the metadata readers, one per file format)
(imported when a registry is first asked, so listing policies does not import Keras).
Other packages add theirs through the entry-point group `animetag.plugins`: each entry point
names a module whose import registers its plug-ins (in their `pyproject.toml`)::

    [project.entry-points."animetag.plugins"]
    my_nets = "my_package.nets"

Both are imported the first time a registry is asked for a name, so `animetag train
--backbone theirs` works in any process. A plug-in may own settings: a dataclass given at
registration, whose fields (with their defaults) are the plug-in's only settings; the values
a run gives are checked against it (`Registry.settings`), each failure naming the setting.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from animetag.settings import check

GROUP = "animetag.plugins"


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Any]
    settings: type | None  # a dataclass: the plug-in's own settings and their defaults
    extra: dict[str, Any]  # whatever else the kind records (a policy's label, ...)

    @property
    def doc(self) -> str:
        lines = (self.fn.__doc__ or "").strip().splitlines()
        return lines[0] if lines else ""

    @property
    def origin(self) -> str:
        return f"{self.fn.__module__}.{self.fn.__qualname__}"


_loaded = False
_failed: dict[str, str] = {}  # entry point -> why it could not be imported


def load_plugins() -> dict[str, str]:
    """Imports every `animetag.plugins` entry point, once per process. Returns those that
    failed to import, each with its error (also warned about, and named when a name is not
    found)."""
    global _loaded
    if _loaded:
        return _failed
    _loaded = True

    for ep in entry_points(group=GROUP):
        try:
            ep.load()
        except Exception as e:  # a broken third-party plug-in must not stop the built-in ones
            _failed[f"{ep.name} = {ep.value}"] = f"{type(e).__name__}: {e}"
            warnings.warn(f"animetag plug-in {ep.name} ({ep.value}) failed to import: {e}", stacklevel=2)
    return _failed


class Registry:
    """Plug-ins of one kind by name, each with its one-line description (its docstring's
    first line) and, where it has them, its own settings."""

    def __init__(self, kind: str, builtin: str):
        self.kind = kind
        self.builtin = builtin  # the module that defines the built-in ones (imported when first asked)
        self._items: dict[str, Entry] = {}

    def _load(self) -> None:
        importlib.import_module(self.builtin)
        load_plugins()

    def register(self, name: str, settings: type | None = None, **extra: Any) -> Callable:
        """A decorator: `@BACKBONES.register("my_net", settings=MyNetSettings)`. Registering
        the same function again (a notebook cell run twice, a module reloaded) replaces it;
        another function under a taken name is an error naming both."""
        if settings is not None and not dataclasses.is_dataclass(settings):
            raise TypeError(f"{self.kind} {name!r}: settings must be a dataclass, not {settings!r}")

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            entry = Entry(name, fn, settings, extra)
            old = self._items.get(name)
            if old is not None and old.origin != entry.origin:
                raise ValueError(f"{self.kind} {name!r} is already registered by {old.origin}; "
                                 f"{entry.origin} needs another name")
            self._items[name] = entry
            return fn

        return add

    def entry(self, name: str) -> Entry:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            failed = "".join(f"\n  (plug-in {k} failed to import: {v})" for k, v in _failed.items())
            raise ValueError(f"{self.kind}: {name!r} is not one of {self.names()}{failed}") from None

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).fn

    def check(self, name: str) -> str:
        self.entry(name)
        return name

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def entries(self) -> list[Entry]:
        """Every plug-in, in the order registered (the built-in ones first)."""
        self._load()
        return list(self._items.values())

    def describe(self) -> dict[str, str]:
        return {n: self._items[n].doc for n in self.names()}

    def settings(self, name: str, given: dict[str, Any] | None = None, prefix: str = "") -> Any:
        """The plug-in's settings object from `given` (its defaults where a value is not
        given); None for a plug-in without settings. An unknown or invalid value is one
        ValueError naming `prefix + field`."""
        entry = self.entry(name)
        given = dict(given or {})
        if entry.settings is None:
            if given:
                raise ValueError(f"{prefix}{sorted(given)}: {self.kind} {name!r} takes no settings")
            return None
        known = [f.name for f in dataclasses.fields(entry.settings)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"{prefix}{unknown[0]}: not a setting of {self.kind} {name!r}; "
                             f"its settings are {known}")
        try:
            obj = entry.settings(**given)  # its __post_init__ may check ranges (`config.check`)
            check(obj)  # every field as its declared type
        except (TypeError, ValueError) as e:
            raise ValueError(f"{prefix}{e}") from None
        return obj

    def defaults(self, name: str) -> dict[str, Any]:
        """The plug-in's settings with their defaults, as JSON types."""
        obj = self.settings(name)
        return {} if obj is None else json_dict(obj)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


def json_dict(obj: Any) -> dict[str, Any]:
    """A settings dataclass as plain JSON types (tuples become lists)."""

    return json.loads(json.dumps(dataclasses.asdict(obj)))


BACKBONES = Registry("backbone", "animetag.model.architecture")
LOSSES = Registry("loss", "animetag.model.losses")
POLICIES = Registry("threshold policy", "animetag.model.policies")
READERS = Registry("metadata format", "animetag.data.danbooru")
