"""Plain command-line values without pydantic.

typer (>= 0.27) coerces every parameter value through a pydantic TypeAdapter, built the
first time the parameter is processed; a command's defaults (None, False) go through it
too. Importing pydantic and building the adapters of one command costs ~0.1-0.3 s of the
start-up of `coralfs log` (docs/benchmarks.md), for values that are already what the
command takes: a string for a ``str`` option, an int default for an ``int`` one.

:func:`install` gives each parameter a runtime coercion that returns such values as they
are, exactly what typer's adapter returns for them, and hands every other value (a
number typed on the command line, a path, a choice, an enum) to typer's own adapter,
built then. With a typer that lacks these internals nothing is changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

try:  # typer's private coercion layer (0.27+); without it there is nothing to patch
    from typer import _coercion
    from typer.core import _TyperParameter
except ImportError:  # pragma: no cover
    _coercion = None
    _TyperParameter = None

_EXACT = (str, int, float, bool)
_DECIMAL = re.compile(r"-?[0-9]{1,18}")   # what any int parser reads the same way


def _plain_kind(descriptor: Any) -> Any | None:
    """The annotation this module coerces itself (``str``, ``int``, ``float``, ``bool`` or
    ``list[str]``), or None when typer's adapter must see every value."""
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or getattr(info, "parser", None) is not None \
            or getattr(info, "click_type", None) is not None \
            or getattr(info, "min", None) is not None or getattr(info, "max", None) is not None:
        return None
    ann = descriptor.annotation
    if ann in _EXACT:
        return ann
    if get_origin(ann) is list and get_args(ann) == (str,):
        return ann
    return None


if _coercion is not None:

    @dataclass(frozen=True)
    class PlainRuntimeParam(_coercion.RuntimeParam):
        """A value that already has its annotation's exact type is returned as is; any
        other goes to typer's adapter (built on first need)."""

        descriptor: Any = None
        _real: list = field(default_factory=list)   # [typer's RuntimeParam] once built

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            ann = self.annotation
            if ann in _EXACT:
                if type(value) is ann:
                    return value
                if ann is int and type(value) is str and _DECIMAL.fullmatch(value):
                    return int(value)   # `-n 5`
            elif isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
                return list(value)   # typer's list adapter returns a list of the strings
            if not self._real:
                self._real.append(_coercion.build_runtime_param(self.descriptor))
            return self._real[0]._coerce_value(value, param=param, ctx=ctx)


def install() -> None:
    """Use :class:`PlainRuntimeParam` for every plain parameter of every command."""
    if _coercion is None or _TyperParameter is None or not hasattr(_TyperParameter, "get_runtime_param") \
            or getattr(_TyperParameter.get_runtime_param, "_coralfs_plain", False):
        return
    original = _TyperParameter.get_runtime_param

    def get_runtime_param(self: Any) -> Any:
        if getattr(self, "_runtime_param", None) is None:
            desc = self.type_descriptor
            ann = _plain_kind(desc)
            if ann is not None:
                self._runtime_param = PlainRuntimeParam(parameter_info=desc.parameter_info, annotation=ann,
                                                        descriptor=desc)
        return original(self)

    get_runtime_param._coralfs_plain = True
    _TyperParameter.get_runtime_param = get_runtime_param
