"""Model formats: one module per container family, one registry (:mod:`.registry`) that detects and loads.

Adding a format: a module implementing :class:`.base.Format` and one line in ``registry.REGISTRY``
(or :func:`.registry.register` at run time).
"""

from .base import Format, LoadOptions, Probe
from .registry import FORMATS, REGISTRY, detect, get, load, register, unregister

__all__ = ["FORMATS", "REGISTRY", "Format", "LoadOptions", "Probe", "detect", "get", "load", "register",
           "unregister"]
