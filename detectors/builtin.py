"""Imports the detector families shipped with infersentry, so they register themselves."""

from __future__ import annotations

import importlib

BUILTIN_MODULES = ("detectors.drift", "detectors.attack")


def load() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
