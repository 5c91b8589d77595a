"""A small name → factory registry, filled by an explicit decorator where parts are defined."""

from __future__ import annotations

from typing import Callable, Iterator


class Registry:
    """Maps names to factories.

    Args:
        kind: what the registry holds, used in error messages (e.g. `"model"`).

    Example:

    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def tiny(num_classes): ...
    >>> MODELS.names()
    ['tiny']
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Returns a decorator that registers its function under `name`."""

        def decorator(factory: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"A {self.kind} named {name!r} is already registered.")
            self._entries[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable:
        """Returns the factory registered as `name`.

        Raises:
            KeyError: for an unknown name; the message lists the valid ones.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"Unknown {self.kind} {name!r}. Valid {self.kind}s: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Returns the registered names in registration order."""
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
