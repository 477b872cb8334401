"""Named extension points: priors, objectives and posteriors are registries a user adds to from their
own file (a `register(name)` decorator), then picks by name in a config (`model.prior=NAME`,
`train.objective=NAME`, `model.posterior=NAME`). The library's own entries are registered the same way.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """name -> factory, for one kind of extension (`kind` and `field` name it in errors)."""

    def __init__(self, kind: str, field: str, module: str):
        self.kind, self.field, self.module = kind, field, module
        self._factories: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: registers `factory` under `name` (a later registration of the name replaces it)."""

        def wrap(factory: F) -> F:
            self._factories[name] = factory
            return factory

        return wrap

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> F:
        """The factory registered as `name`; a ValueError naming the registered ones otherwise."""
        if name not in self._factories:
            raise ValueError(
                f"unknown {self.kind} {name!r} ({self.field}); registered: {self.names()}. A custom {self.kind} "
                f"is registered with {self.module}.register in a file imported before training (on the command "
                "line: --plugin FILE.py or --plugin package.module)"
            )
        return self._factories[name]
