"""Name → generator family / discovery method, with lazy built-ins and entry-point plugins.

Built-ins are named by ``"module:function"`` strings and imported on first use, so ``import
latentdirs`` stays fast. Plugins register under the entry-point groups ``latentdirs.generators`` and
``latentdirs.methods``; a plugin that fails to import is listed as broken (with its error) and refused
with that error when used, never fatal to the other commands.

:func:`load_generator` keeps the options a generator was loaded with on the adapter
(``adapter.load_options``, recorded by ``describe()``), and :func:`generator_from_record` reloads a
generator from the ``"generator"`` entry a direction file or manifest recorded — limited, when the
spec comes from the file, to built-in families that import no code.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from latentdirs.errors import (DirectionFileError, InvalidValueError, LatentDirsError, MissingWeightsError,
                               NotSupportedError, UnknownNameError, describe_allowed, invalid)
from latentdirs.generators.base import GeneratorAdapter
from latentdirs.specs import split_generator_spec

GENERATOR_GROUP = "latentdirs.generators"
METHOD_GROUP = "latentdirs.methods"


def _import(path: str) -> Callable[..., Any]:
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class GeneratorFamily:
    """A generator family: ``loader(argument, *, device, **options) -> GeneratorAdapter``.

    ``loader`` is a ``"module:function"`` path (built-ins, imported on first use) or, for plugins, the
    entry point's value; ``needs_argument`` says whether specs read ``family:ARGUMENT`` (True), plain
    ``family`` (False), or either (None: the plugin decides). ``imports_code``: loading it imports and
    runs code the spec names or a package supplies (``module:``, every plugin) — never done for a spec
    read from a file.
    """

    name: str
    loader: str
    needs_argument: bool | None
    description: str
    example: str = "ARGUMENT"
    imports_code: bool = False
    plugin: bool = False
    #: the entry point of a plugin (loaded through it, so extras and dotted attributes work)
    entry_point: Any = field(default=None, compare=False, repr=False)

    def resolve(self) -> Callable[..., Any]:
        """The loader function; a plugin that fails to import raises :class:`NotSupportedError`."""
        return _resolve(self.loader, self.entry_point, "generator", self.name)


@dataclass(frozen=True)
class MethodEntry:
    """A discovery method: ``function(generator, **options) -> Directions`` (``"module:function"`` path)."""

    name: str
    function: str
    description: str
    plugin: bool = False
    entry_point: Any = field(default=None, compare=False, repr=False)

    def resolve(self) -> Callable[..., Any]:
        """The method function; a plugin that fails to import raises :class:`NotSupportedError`."""
        return _resolve(self.function, self.entry_point, "method", self.name)


BUILTIN_GENERATORS: dict[str, GeneratorFamily] = {entry.name: entry for entry in (
    GeneratorFamily("dcgan-faces", "latentdirs.generators.dcgan:load_faces", False,
                    "DCGAN, 64 px faces (embedded, default)"),
    GeneratorFamily("dcgan-eyes", "latentdirs.generators.dcgan:load_eyes", False,
                    "conditional DCGAN, 128 px eyes, 8 colours (embedded)"),
    GeneratorFamily("synthetic", "latentdirs.generators.synthetic:load_synthetic", False,
                    "procedural sprite with known factor directions"),
    GeneratorFamily("shapes-dcgan", "latentdirs.generators.shapes:load_shapes_dcgan", False,
                    "DCGAN, 64 px scenes of one object with known factors (trained here, partly)"),
    GeneratorFamily("shapes-stylegan2", "latentdirs.generators.shapes_stylegan2:load_shapes_stylegan2", False,
                    "StyleGAN2, 32 px scenes of one object with known factors (trained here, partly)"),
    GeneratorFamily("biggan", "latentdirs.generators.biggan:load_biggan", True,
                    "biggan:biggan-deep-128|256|512 or biggan:DIR (config.json + pytorch_model.bin)",
                    example="biggan-deep-128"),
    GeneratorFamily("stylegan2", "latentdirs.generators.stylegan2:load_stylegan2", True,
                    "stylegan2:PATH, an NVlabs/TensorFlow pickle or a rosinality .pt", example="network.pkl"),
    GeneratorFamily("stylegan3", "latentdirs.generators.stylegan3:load_stylegan3", True,
                    "stylegan3:PATH, an NVlabs StyleGAN3 (config-T/R) pickle", example="network.pkl"),
    GeneratorFamily("module", "latentdirs.generators.module:load_module", True,
                    "module:pkg.mod:factory, your own torch generator",
                    example="mypackage.models:make_generator", imports_code=True),
)}

BUILTIN_METHODS: dict[str, MethodEntry] = {entry.name: entry for entry in (
    MethodEntry("sefa", "latentdirs.methods.sefa:sefa", "closed-form factorization of the latent projection weights"),
    MethodEntry("orojar", "latentdirs.methods.orojar:orojar",
                "learned orthogonal basis under the orthogonal-Jacobian penalty"),
    MethodEntry("regression", "latentdirs.methods.regression:regression",
                "calibrated direction by inversion of transformed images + monotone regression"),
    MethodEntry("ganspace", "latentdirs.methods.ganspace:ganspace",
                "principal components of sampled activations (or of w), regressed back to the latent"),
    MethodEntry("interfacegan", "latentdirs.methods.interfacegan:interfacegan",
                "linear boundary separating labelled samples (file, scorer or built-in attribute), calibrated"),
)}

DEFAULT_GENERATOR = "dcgan-faces"


def _resolve(path: str, point: Any, kind: str, name: str) -> Callable[..., Any]:
    if point is None:
        return _import(path)
    try:
        return point.load()
    except Exception as error:  # a broken plugin must not break the tool: say what broke, when it is used
        raise invalid(kind, name, f"a {kind} whose plugin imports; {name!r} is broken ({_reason(error)})",
                      f"Fix or reinstall the package that provides the {name!r} plugin",
                      cls=NotSupportedError) from None


def _reason(error: BaseException) -> str:
    """``"ImportError: no module named x"``: the first line of an error, with its type."""
    text = str(error).splitlines()[0][:200] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _plugin_points(group: str) -> dict[str, Any]:
    return {point.name: point for point in entry_points(group=group)}


def generator_families() -> dict[str, GeneratorFamily]:
    """Every generator family: built-ins first, then plugins (a plugin never shadows a built-in)."""
    families = dict(BUILTIN_GENERATORS)
    for name, point in _plugin_points(GENERATOR_GROUP).items():
        families.setdefault(name, GeneratorFamily(name, point.value, None, "plugin", imports_code=True,
                                                  plugin=True, entry_point=point))
    return families


def method_entries() -> dict[str, MethodEntry]:
    """Every discovery method: built-ins first, then plugins (a plugin never shadows a built-in)."""
    methods = dict(BUILTIN_METHODS)
    for name, point in _plugin_points(METHOD_GROUP).items():
        methods.setdefault(name, MethodEntry(name, point.value, "plugin", plugin=True, entry_point=point))
    return methods


def _described(entry: GeneratorFamily | MethodEntry) -> str:
    """The entry's description; a plugin that does not import reads ``"plugin (broken: ImportError: …)"``."""
    if not entry.plugin:
        return entry.description
    try:
        entry.entry_point.load()
    except Exception as error:  # listing must survive every broken plugin
        return f"plugin (broken: {_reason(error)})"
    return entry.description


def list_generators() -> dict[str, str]:
    """Family name → description, built-ins first, then plugins (``"plugin (broken: …)"`` if one does not import)."""
    return {name: _described(entry) for name, entry in generator_families().items()}


def list_methods() -> dict[str, str]:
    """Method name → description, built-ins first, then plugins (``"plugin (broken: …)"`` if one does not import)."""
    return {name: _described(entry) for name, entry in method_entries().items()}


def _family(name: str, spec: str) -> GeneratorFamily:
    entry = BUILTIN_GENERATORS.get(name) or generator_families().get(name)
    if entry is None:
        # names only: listing would import every plugin, and the spec may come from a file
        raise invalid("generator", spec, describe_allowed(generator_families()), "Run 'latentdirs list generators'",
                      cls=UnknownNameError)
    return entry


def load_generator(spec: str = DEFAULT_GENERATOR, *, device: str | torch.device = "auto",
                   **options: Any) -> GeneratorAdapter:
    """Load a generator adapter from a spec such as ``"dcgan-faces"`` or ``"biggan:/path/to/dir"``.

    ``options`` go to the family's loader (e.g. ``noise_mode="random"`` for ``stylegan2:``); values
    must be JSON scalars or lists, because the adapter keeps them as ``adapter.load_options`` and
    ``describe()`` records them, so a file made with the generator reloads it the same way (see
    :func:`generator_from_record`). Unknown families list the known ones; options a loader does not
    take are refused with the list of those it does.

    Returns a :class:`~latentdirs.generators.base.GeneratorAdapter`.
    """
    family, argument = split_generator_spec(spec)
    entry = _family(family, spec)
    if entry.needs_argument and argument is None:
        raise invalid("generator", spec, f"'{family}:ARGUMENT'", f"e.g. {family}:{entry.example}")
    if entry.needs_argument is False and argument is not None:
        raise invalid("generator", spec, f"'{family}' without ':…'")
    recorded = _recordable(options)
    loader = entry.resolve()
    check_options(loader, options, param="generator option", skip=("argument", "device"))
    adapter = loader(argument, device=device, **options)
    if not isinstance(adapter, GeneratorAdapter):
        raise invalid("generator", spec, "a family whose loader returns a GeneratorAdapter",
                      f"{entry.loader} returned {type(adapter).__name__}", cls=NotSupportedError)
    adapter.load_options = recorded
    adapter.source = _source_of(argument)
    return adapter


def _source_of(argument: str | None) -> dict[str, Any] | None:
    """``{"path", "absolute", "sha256"}`` when the spec's argument names weights on disk, else None.

    For a directory (BigGAN's config.json + pytorch_model.bin) the digest covers its files, by name."""
    if argument is None or not Path(argument).exists():
        return None
    from latentdirs.weights import sha256_of

    path = Path(argument)
    if path.is_dir():
        digest = hashlib.sha256()
        for member in sorted(p for p in path.iterdir() if p.is_file()):
            digest.update(f"{member.name}|{sha256_of(member)}|".encode())
        checksum = digest.hexdigest()
    else:
        checksum = sha256_of(path)
    return {"path": argument, "absolute": str(path.resolve()), "sha256": checksum}


#: option names the spec and --device already set: an option of that name would collide with them
_RESERVED_OPTIONS = ("argument", "device", "spec")


def _recordable(options: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-able copy of loader options (tuples become lists); anything else is refused."""
    _check_option_names(options, "generator option", None, InvalidValueError)
    copied: dict[str, Any] = {}
    for key, value in options.items():
        if not _is_json_value(value):
            raise invalid("generator option", f"{key}={_echo(value)}",
                          "a JSON scalar (number, string, true/false, null) or a list of them, so that "
                          "it can be recorded with the files the generator makes", "Pass e.g. first_layer=fc")
        copied[key] = json.loads(json.dumps(value))
    return copied


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)  # NaN and ±inf are not JSON
    if isinstance(value, (list, tuple)):
        return all(_is_json_value(item) for item in value)
    return False


def _echo(value: Any, limit: int = 80) -> Any:
    """``value`` itself when its repr is short, else a description, so one error stays one line."""
    text = repr(value)
    return value if len(text) <= limit else f"{text[:limit]}… ({type(value).__name__})"


def generator_request(record: Mapping[str, Any] | None, *, spec: str | None = None,
                      options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The spec and options :func:`generator_from_record` loads, without loading or importing anything.

    Rules: the user's ``spec`` wins when given; the recorded options apply when ``spec`` is ``None`` or
    equals the recorded spec, and the user's ``options`` override them key by key; a different user
    spec gets the user's options only. A spec taken from the record must name a built-in family that
    imports no code (not ``module:``, not a plugin): a file a user is handed never decides which code
    runs.
    """
    recorded_spec, recorded_options = _read_record(record)
    user_options = dict(options or {})
    _check_option_names(user_options, "--gen-opt", None, InvalidValueError)
    if spec is not None and not isinstance(spec, str):
        raise invalid("-g/--generator", _echo(spec), "a generator spec string such as dcgan-faces")
    if spec is not None:
        same = recorded_spec is not None and spec.strip() == recorded_spec.strip()
        return spec, ({**recorded_options, **user_options} if same else user_options)
    if recorded_spec is None:
        raise invalid("-g/--generator", None, "a generator spec such as dcgan-faces",
                      "The file names no generator; pass -g/--generator")
    _check_recorded_spec(recorded_spec)
    return _locate(recorded_spec, record), {**recorded_options, **user_options}


def _locate(spec: str, record: Mapping[str, Any] | None) -> str:
    """A recorded spec whose path exists from here: as given, else its recorded absolute form.

    A spec naming weights that are in neither place is refused with the way out (-g NEWPATH); the
    fingerprint check of the direction file then proves the moved file holds the same weights."""
    family, argument = split_generator_spec(spec)
    source = record.get("source") if isinstance(record, Mapping) else None
    if argument is None or not isinstance(source, Mapping) or Path(argument).exists():
        return spec
    absolute = source.get("absolute")
    if isinstance(absolute, str) and Path(absolute).exists():
        return f"{family}:{absolute}"
    raise invalid("generator (read from the file)", spec, "weights that exist on this machine",
                  f"Neither {argument!r} (from here) nor {absolute!r} exists; if the weights moved, pass "
                  f"-g {family}:NEWPATH (the fingerprint check proves they are the same weights)",
                  cls=MissingWeightsError)


def generator_from_record(record: Mapping[str, Any] | None, *, spec: str | None = None,
                          options: Mapping[str, Any] | None = None,
                          device: str | torch.device = "auto") -> GeneratorAdapter:
    """Reload the generator a direction file's or manifest's ``"generator"`` entry describes.

    ``record`` is that entry (``describe()`` of the generator, with its ``spec`` and ``options``; may be
    ``None``), ``spec`` / ``options`` what the user passed (``-g``, ``--gen-opt``). Which spec and
    options are loaded follows :func:`generator_request`. A malformed record raises
    :class:`~latentdirs.errors.DirectionFileError`; a spec read from the record that would import code,
    or no spec at all, raises :class:`~latentdirs.errors.InvalidValueError`.
    """
    chosen_spec, chosen_options = generator_request(record, spec=spec, options=options)
    return load_generator(chosen_spec, device=device, **chosen_options)


def _read_record(record: Any) -> tuple[str | None, dict[str, Any]]:
    """``(spec or None, options)`` of a recorded generator entry, checked for the JSON types it needs."""
    fix = "The file's header is malformed; re-create the file or repair its 'generator' entry"
    if record is None:
        return None, {}
    if not isinstance(record, Mapping):
        raise invalid("generator", _echo(record), "an object with 'spec' (a string) and 'options' (an object)",
                      fix, cls=DirectionFileError)
    spec, options = record.get("spec"), record.get("options")
    if spec is not None and (not isinstance(spec, str) or not spec.strip()):
        raise invalid("generator.spec", _echo(spec), "a non-empty string such as 'dcgan-faces'", fix,
                      cls=DirectionFileError)
    if options is None:
        return spec, {}
    if not isinstance(options, Mapping):
        raise invalid("generator.options", _echo(options), "an object of loader options", fix,
                      cls=DirectionFileError)
    _check_option_names(options, "generator.options", fix, DirectionFileError)
    return spec, dict(options)


def _check_option_names(options: Mapping[Any, Any], param: str, fix: str | None,
                        cls: type[LatentDirsError]) -> None:
    """Option names must be identifiers other than those the spec and --device set (they would collide)."""
    for key in options:
        if not isinstance(key, str) or not key.isidentifier() or key in _RESERVED_OPTIONS:
            raise invalid(param, _echo(key), "identifier keys naming options of the loader "
                          f"(not {', '.join(_RESERVED_OPTIONS)}, which the spec and --device set)", fix, cls=cls)


def _check_recorded_spec(spec: str) -> None:
    """Refuse a spec read from a file whose family would import code (``module:``, any plugin)."""
    family, _ = split_generator_spec(spec)
    entry = BUILTIN_GENERATORS.get(family) or generator_families().get(family)  # lists, imports nothing
    if entry is None or not entry.imports_code:
        return  # a code-free built-in, or an unknown name that load_generator reports as unknown
    safe = ", ".join(name for name, f in BUILTIN_GENERATORS.items() if not f.imports_code)
    raise invalid("generator (read from the file)", spec,
                  f"a built-in family that imports no code ({safe}); this spec would import and run code",
                  "Pass it yourself with -g/--generator if you trust it")


def get_method(name: str) -> Callable[..., Any]:
    """The discovery function registered as ``name``; a broken plugin raises :class:`NotSupportedError`."""
    entry = BUILTIN_METHODS.get(name) or method_entries().get(name)
    if entry is None:
        raise invalid("method", name, describe_allowed(method_entries()), "Run 'latentdirs list methods'",
                      cls=UnknownNameError)
    return entry.resolve()


def accepted_options(function: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    """Keyword options a loader or method takes: name → :class:`inspect.Parameter`, without ``skip``.

    A ``**kwargs`` parameter is not listed (:func:`check_options` then accepts every name).
    """
    parameters = inspect.signature(function).parameters
    return {name: p for name, p in parameters.items()
            if name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_options(function: Callable[..., Any], options: Mapping[str, Any], *, param: str,
                  skip: tuple[str, ...] = ()) -> None:
    """Refuse options ``function`` does not take, listing those it does."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    known = accepted_options(function, skip)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise invalid(param, unknown[0] if len(unknown) == 1 else unknown, describe_allowed(known) or "none",
                      cls=UnknownNameError)
