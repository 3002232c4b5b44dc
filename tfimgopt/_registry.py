"""Name -> object tables that refuse duplicates, list themselves and suggest close names.

Modelled on tensorflow/models `official/core/registry.py` (registering a name twice raises)
and timm's `list_models(filter, exclude_filters)`.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from tfimgopt.errors import ConfigError, received

T = TypeVar("T")


class Registry(Generic[T]):
    """A registry of one kind of thing (models, exporters, ...), keyed by name.

    Example:
        >>> from tfimgopt._registry import Registry
        >>> widgets = Registry("widget")
        >>> _ = widgets.register("round", object())
        >>> widgets.names()
        ['round']
        >>> widgets.get("rund")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tfimgopt.errors.ConfigError: Unknown widget 'rund'; did you mean 'round'? ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> T | Callable[[T], T]:
        """Adds `obj` under `name`, or returns a decorator that does.

        Raises:
            ConfigError: if `name` is not a non-empty string or is registered already.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"A {self.kind} name must be a non-empty string. {received('name', name)}")

        def add(item: T) -> T:
            if name in self._entries:
                raise ConfigError(
                    f"A {self.kind} named {name!r} is registered already ({self._entries[name]!r}); choose "
                    f"another name. {received('name', name)}")
            self._entries[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The entry registered as `name`; an unknown name raises with the closest matches."""
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(str(name), self._entries, n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else "."
        raise ConfigError(f"Unknown {self.kind} {name!r}{hint} Valid names: {self.names()}. "
                          f"{received(self.kind, name)}")

    def names(self, filter: str | None = None, exclude: Iterable[str] = ()) -> list[str]:  # noqa: A002
        """Sorted names, optionally those matching a shell pattern and none of `exclude`."""
        names = sorted(self._entries)
        if filter:
            names = fnmatch.filter(names, filter)
        for pattern in exclude:
            names = [n for n in names if not fnmatch.fnmatch(n, pattern)]
        return names

    def entries(self) -> list[T]:
        """Every entry, in registration order."""
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries
