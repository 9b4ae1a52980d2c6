"""Name registries: unknown names fail with the list of registered ones."""

from __future__ import annotations

from collections.abc import Callable


class Registry(dict):
    """``{name: function}`` with a ``register(name)`` decorator and a ``get`` that explains misses."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[Callable], Callable]:
        def deco(fn: Callable) -> Callable:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable:
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {sorted(self)}")
        return self[name]
