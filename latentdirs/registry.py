"""Name → generator loader / discovery method, with lazy built-ins and entry-point plugins.

Built-ins are named by ``"module:function"`` strings and imported on first use, so ``import
latentdirs`` stays fast. Plugins register under the entry-point groups ``latentdirs.generators`` and
``latentdirs.methods``; a plugin that fails to load is skipped with a warning, never fatal.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import warnings
from importlib.metadata import entry_points
from typing import Any, Callable

import torch

from latentdirs.errors import UnknownNameError, describe_allowed, invalid
from latentdirs.specs import split_generator_spec

log = logging.getLogger(__name__)

#: family → (loader path, needs an argument after "family:", one-line description)
BUILTIN_GENERATORS: dict[str, tuple[str, bool, str]] = {
    "dcgan-faces": ("latentdirs.generators.dcgan:load_faces", False, "DCGAN, 64 px faces (embedded, default)"),
    "dcgan-eyes": ("latentdirs.generators.dcgan:load_eyes", False, "conditional DCGAN, 128 px eyes, 8 colours (embedded)"),
    "synthetic": ("latentdirs.generators.synthetic:load_synthetic", False, "procedural sprite with known factor directions"),
    "biggan": ("latentdirs.generators.biggan:load_biggan", True, "biggan:biggan-deep-128|256|512 or biggan:DIR (config.json + pytorch_model.bin)"),
    "stylegan2": ("latentdirs.generators.stylegan2:load_stylegan2", True, "stylegan2:PATH, an NVlabs/TensorFlow pickle or a rosinality .pt"),
    "module": ("latentdirs.generators.module:load_module", True, "module:pkg.mod:factory, your own torch generator"),
}

#: method → (function path, one-line description)
BUILTIN_METHODS: dict[str, tuple[str, str]] = {
    "sefa": ("latentdirs.methods.sefa:sefa", "closed-form factorization of the latent projection weights"),
    "orojar": ("latentdirs.methods.orojar:orojar", "learned orthogonal basis under the orthogonal-Jacobian penalty"),
    "regression": ("latentdirs.methods.regression:regression", "calibrated direction by inversion of transformed images + monotone regression"),
}

DEFAULT_GENERATOR = "dcgan-faces"


def _import(path: str) -> Callable[..., Any]:
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _plugins(group: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for point in entry_points(group=group):
        found[point.name] = point
    return found


def _load_plugin(point: Any, group: str) -> Callable[..., Any] | None:
    try:
        return point.load()
    except Exception as error:  # a broken plugin must not break the tool
        warnings.warn(f"{group} plugin {point.name!r} failed to load and is skipped: {error}", stacklevel=3)
        return None


def list_generators() -> dict[str, str]:
    """Family name → description, built-ins first, then plugins."""
    names = {name: description for name, (_, _, description) in BUILTIN_GENERATORS.items()}
    for name in _plugins("latentdirs.generators"):
        names.setdefault(name, "plugin")
    return names


def list_methods() -> dict[str, str]:
    """Method name → description, built-ins first, then plugins."""
    names = {name: description for name, (_, description) in BUILTIN_METHODS.items()}
    for name in _plugins("latentdirs.methods"):
        names.setdefault(name, "plugin")
    return names


def load_generator(spec: str = DEFAULT_GENERATOR, *, device: str | torch.device = "auto", **options: Any):
    """Load a generator adapter from a spec such as ``"dcgan-faces"`` or ``"biggan:/path/to/dir"``.

    Returns a :class:`~latentdirs.generators.base.GeneratorAdapter`. Unknown families list the known
    ones; options a loader does not take are refused with the list of those it does.
    """
    family, argument = split_generator_spec(spec)
    if family in BUILTIN_GENERATORS:
        path, needs_argument, _ = BUILTIN_GENERATORS[family]
        if needs_argument and argument is None:
            raise invalid("generator", spec, f"'{family}:ARGUMENT'", f"e.g. {family}:{_example(family)}")
        if not needs_argument and argument is not None:
            raise invalid("generator", spec, f"'{family}' without ':…'")
        loader = _import(path)
    else:
        plugins = _plugins("latentdirs.generators")
        loader = _load_plugin(plugins[family], "latentdirs.generators") if family in plugins else None
        if loader is None:
            raise UnknownNameError(f"generator: got {spec!r}; known: {describe_allowed(list_generators())} "
                                   "(run 'latentdirs list generators')")
    check_options(loader, options, param="generator option", skip=("argument", "device"))
    return loader(argument, device=device, **options)


def get_method(name: str) -> Callable[..., Any]:
    """The discovery function registered as ``name``."""
    if name in BUILTIN_METHODS:
        return _import(BUILTIN_METHODS[name][0])
    plugins = _plugins("latentdirs.methods")
    method = _load_plugin(plugins[name], "latentdirs.methods") if name in plugins else None
    if method is None:
        raise UnknownNameError(f"method: got {name!r}; known: {describe_allowed(list_methods())} "
                               "(run 'latentdirs list methods')")
    return method


def accepted_options(function: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    """Keyword options a loader or method takes (None when it takes ``**kwargs``)."""
    parameters = inspect.signature(function).parameters
    return {name: p for name, p in parameters.items()
            if name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_options(function: Callable[..., Any], options: dict[str, Any], *, param: str,
                  skip: tuple[str, ...] = ()) -> None:
    """Refuse options ``function`` does not take, listing those it does."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    known = accepted_options(function, skip)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UnknownNameError(f"{param}: got {', '.join(map(repr, unknown))}; "
                               f"allowed: {describe_allowed(known) or 'none'}")


def _example(family: str) -> str:
    return {"module": "mypackage.models:make_generator", "biggan": "biggan-deep-128"}.get(family, "ARGUMENT")
