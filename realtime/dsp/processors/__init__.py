"""Processor registry: kind name -> Processor subclass.

Built-in DSP processors register themselves when this package is imported. Neural processors
(which pull in onnxruntime and model files) are listed in ``_LAZY`` and imported only when a
preset or a caller first asks for them, so a plain DSP chain starts fast and without them.
"""
from __future__ import annotations

import importlib
import importlib.util

from realtime.dsp.processor import Processor
from realtime.errors import UnknownProcessorError

REGISTRY: dict[str, type[Processor]] = {}
SLOT_CONTROLS = ("bypass", "mix")  # set per slot by the chain, not by processors

# kind -> module that registers it on import (kept unimported until first use).
_LAZY: dict[str, str] = {
    "enhancer": "realtime.dsp.processors.neural.enhancer",
    "delimiter": "realtime.dsp.processors.neural.delimiter",
    "synth": "realtime.dsp.processors.synth.processor",
    "lv2": "realtime.dsp.processors.lv2",
}
# Kinds that host a family of plugins: a slot names one by "uri" (its own params), so they cannot
# be created bare and are left out of available_kinds() (lists of what to create with no arguments).
URI_KINDS = ("lv2",)


def register(cls: type[Processor]) -> type[Processor]:
    """Class decorator: add ``cls`` to REGISTRY under ``cls.kind``."""
    kind = cls.kind
    if not kind or not isinstance(kind, str):
        raise TypeError(f"{cls.__name__}: set a non-empty string 'kind' before registering")
    # the chain's own per-slot controls: a parameter of that name could never be set by `slot.mix=`
    clash = [d.id for d in cls.params if d.id in SLOT_CONTROLS]
    if clash:
        raise TypeError(f"{cls.__name__}: parameter ids {clash} clash with the slot controls {SLOT_CONTROLS}")
    old = REGISTRY.get(kind)
    # Same qualified name = a module reload, which is fine; a different class is a clash.
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"processor kind {kind!r} already registered by {old.__module__}.{old.__qualname__}")
    REGISTRY[kind] = cls
    return cls


def _lazy_available(kind: str) -> bool:
    try:
        return importlib.util.find_spec(_LAZY[kind]) is not None
    except (ImportError, ValueError):
        return False


def available_kinds() -> list[str]:
    """Registered kinds plus lazily importable ones whose module exists (``URI_KINDS`` excepted)."""
    kinds = set(REGISTRY)
    kinds.update(k for k in _LAZY if k not in REGISTRY and _lazy_available(k))
    return sorted(kinds.difference(URI_KINDS))


def processor_class(kind: str) -> type[Processor]:
    """Look up (importing on first use if lazy) the class for ``kind``."""
    cls = REGISTRY.get(kind)
    if cls is not None:
        return cls
    if isinstance(kind, str) and kind in _LAZY:
        if not _lazy_available(kind):
            raise UnknownProcessorError(f"processor {kind!r} is not installed (module {_LAZY[kind]} not found)")
        try:
            importlib.import_module(_LAZY[kind])
        except Exception as e:  # a broken optional dependency must read as a clear message
            raise UnknownProcessorError(f"processor {kind!r} could not be loaded: {type(e).__name__}: {e}") from e
        cls = REGISTRY.get(kind)
        if cls is not None:
            return cls
        raise UnknownProcessorError(f"module {_LAZY[kind]} did not register processor {kind!r}")
    raise UnknownProcessorError(f"unknown processor {kind!r}; known: {available_kinds()}")


def slot_class(kind: str, uri: str | None = None) -> type[Processor]:
    """The class a preset slot instantiates: ``processor_class(kind)``, or for a kind in
    ``URI_KINDS`` the class of the plugin ``uri`` names (made on first use).

    Raises
    ------
    UnknownProcessorError
        Unknown kind, or a URI kind without a uri.
    PluginError
        The plugin is not installed or cannot be hosted.
    """
    cls = processor_class(kind)
    if kind in URI_KINDS:
        if not uri:
            raise UnknownProcessorError(f"processor {kind!r} needs the plugin's uri")
        return cls.for_uri(uri)
    return cls


def create(kind: str, /, **params) -> Processor:
    """Instantiate a processor by kind with initial parameter values."""
    return processor_class(kind)(**params)


# Built-ins register on import (at the bottom: they import ``register`` from here).
from realtime.dsp.processors import biquad, declip, gain, limiter, meter, safety  # noqa: E402,F401

__all__ = ["REGISTRY", "URI_KINDS", "UnknownProcessorError", "available_kinds", "create", "processor_class", "register",
           "slot_class"]
