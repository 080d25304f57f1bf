"""The object importer: a config's `module:Class` string (agents, servers, programs) -> the object.

Ground level, so every part that reads such a string shares one error message naming the path.
"""

from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str) -> Any:
    """`package.module:Name` (or `package.module.Name`) -> the object, with an error naming the path."""
    module, _, name = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"cannot import {path!r}: {e}") from e
