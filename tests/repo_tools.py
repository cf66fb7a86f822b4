"""Load a script of the repository's ``tools/`` as a module, for tests of its
pure parts (``tools/`` is not a package: its scripts run as files)."""

from __future__ import annotations

import importlib.util
import pathlib
import types

TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str) -> types.ModuleType:
    """``tools/<name>.py``, freshly executed."""
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
