"""errors.py draws the whole XswarmError tree: a new error must be added to the drawing."""

from __future__ import annotations

import importlib
import pkgutil

import xswarm
from xswarm import errors


def _subclasses(cls: type) -> set[type]:
    direct = set(cls.__subclasses__())
    return direct.union(*(_subclasses(sub) for sub in direct))


def test_the_docstring_draws_every_error_in_the_package() -> None:
    for module in pkgutil.walk_packages(xswarm.__path__, "xswarm."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    drawn = errors.__doc__ or ""
    for error in _subclasses(errors.XswarmError):
        if error.__module__.startswith("xswarm."):
            assert f"── {error.__name__} " in drawn, f"{error.__module__}.{error.__name__}"
