"""Named plug-ins, as timm registers its models: a backbone or a loss is one function
registered under a name; configuration validation, the CLI's choices and the docs are built
from the names. An unknown name is an error that lists the known ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry:
    """Functions by name, each with a one-line description (its docstring's first line)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            return fn

        return add

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"{self.kind}: {name!r} is not one of {self.names()}") from None

    def check(self, name: str) -> str:
        self.get(name)
        return name

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self) -> dict[str, str]:
        return {n: (self._items[n].__doc__ or "").strip().splitlines()[0] if self._items[n].__doc__ else ""
                for n in self.names()}

    def __contains__(self, name: str) -> bool:
        return name in self._items


BACKBONES = Registry("backbone")
LOSSES = Registry("loss")
