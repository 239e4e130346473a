"""Safe reading of weight files: checksums, package-embedded files, torch checkpoints checked before loading.

Nothing here executes code from a file, and nothing is allocated because a file merely *declares* it:

* a ``torch.save`` file (zip or legacy) is first scanned by an unpickler that calls nothing
  (:class:`_DeclarationScan`): every global must be on a short allow-list of what weight files need,
  every storage's declared size must equal the bytes the file really holds for it, every tensor view
  must fit its storage without repeating an element (no stride-0 "expanded" views, which a few bytes
  can blow up into gigabytes), and all views together must stay within twice the file's size. Only
  then does ``torch.load(weights_only=True)`` read it, on the CPU;
* a state dict is compared key by key and shape by shape with the model it is for
  (:func:`check_state_dict`) before anything is copied into the model;
  :func:`build_with_state` does that on a model built on the meta device and then makes the
  state's tensors the model's own, so loading holds one copy of the weights, not two.

PyTorch's own error texts are never passed on: they advise re-running ``torch.load`` with
``weights_only=False``, which would run the file's code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import pickle
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import torch

from latentdirs.errors import MissingWeightsError, WeightsMismatchError, invalid

#: refuse any single tensor declaring more elements than this (8 GiB of float32), whatever the file says
MAX_TENSOR_ELEMENTS = 1 << 31
#: refuse tensors with more dimensions than this (weights have at most 5)
MAX_TENSOR_DIMS = 16
#: all tensor views of a file together may declare at most this multiple of the file's size (float32 bytes)
VIEW_BUDGET_FACTOR = 2
#: refuse zip archives with more entries than this (a state dict of 100 000 tensors is already unusual)
MAX_ZIP_ENTRIES = 200_000

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_REFUSED_FIX = "Nothing was allocated for it or run from it; the file is corrupt or crafted — re-export it from the original checkpoint"

#: element size of each storage type a torch file may name (``torch.FloatStorage`` …)
STORAGE_ELEMENT_SIZES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "UntypedStorage": 1,
}

#: globals a weights file needs: tensor rebuilding, ordered dicts, storage types, protocol-2 bytes and sets
TORCH_FILE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_parameter"),
     ("collections", "OrderedDict"), ("builtins", "set"), ("__builtin__", "set"), ("_codecs", "encode")}
    | {("torch", name) for name in STORAGE_ELEMENT_SIZES})


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (memory stays flat for multi-GB files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_file(package: str, relative: str, *, pip_requirement: str) -> Path:
    """Locate ``relative`` inside an installed package *without importing it*.

    Some weight packages run code at import (one loads CUDA tensors and crashes on CPU machines), so
    the file is found through the import system's metadata only.
    """
    install = f"pip install --no-deps {pip_requirement}"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"weights: the package {package!r} is not installed; install it with: {install}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise MissingWeightsError(f"weights: {package!r} is installed but has no {relative!r}; "
                              f"reinstall it with: {install} --force-reinstall")


def verify_sha256(path: Path, expected: str, *, fix: str) -> None:
    """Refuse a file whose sha256 differs from the catalogue's."""
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsMismatchError(f"weights: {path} has sha256 {actual}, expected {expected}. {fix}")


def load_torch_weights(path: str | Path, *, param: str = "weights", extra_globals: Iterable[type] = ()) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``, after every declaration in the file was checked.

    ``param`` names the option or argument the file came from (it starts every error message);
    ``extra_globals`` are plain classes a format needs besides tensors (rosinality's
    ``argparse.Namespace``): allowed in the scan and in torch's own allow-list, nothing else is.
    Raises :class:`MissingWeightsError` for a missing file, :class:`WeightsMismatchError` for anything
    that is not a plain, self-consistent ``torch.save`` file of tensors and containers.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"{param}: no file at {str(path)!r}")
    extra = tuple(extra_globals)
    allowed = TORCH_FILE_GLOBALS | {(cls.__module__, cls.__qualname__) for cls in extra}
    size = path.stat().st_size
    with open(path, "rb") as handle:
        is_zip = handle.read(4) == _ZIP_MAGIC
    if is_zip:  # torch reads zip records by the sizes its directory states, which the scan compared with the file
        with open(path, "rb") as handle:
            _scan_zip(handle, size, allowed=allowed, param=param, name=path.name)
        source: Any = path
    else:  # a legacy file is read from memory: torch's unpickler would allocate lengths a file handle only declares
        data = path.read_bytes()
        _scan_legacy(data, allowed=allowed, param=param, name=path.name)
        source = io.BytesIO(data)
    loaded = _torch_load(source, extra, param=param, name=path.name)
    check_loaded_tensors(loaded, file_size=size, param=param, name=path.name, extra_types=extra)
    return loaded


def load_torch_bytes(data: bytes, *, param: str, name: str) -> Any:
    """:func:`load_torch_weights` for an in-memory ``torch.save`` blob (a storage inside a network pickle)."""
    if data[:4] == _ZIP_MAGIC:
        _scan_zip(io.BytesIO(data), len(data), allowed=TORCH_FILE_GLOBALS, param=param, name=name)
    else:
        _scan_legacy(data, allowed=TORCH_FILE_GLOBALS, param=param, name=name)
    return _torch_load(io.BytesIO(data), (), param=param, name=name)


def _torch_load(source: Any, extra: tuple[type, ...], *, param: str, name: str) -> Any:
    try:
        with torch.serialization.safe_globals(list(extra)):
            return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, … — reworded, never torch's own advice
        raise _refused(param, name, library_reason(error),
                       "a torch.save file holding tensors and plain containers only") from None


# ---------------------------------------------------------------------- messages
_UNSAFE_ADVICE = re.compile(r"weights_only|weights only|trust|unsafe|arbitrary code|allow_pickle|safe_globals|"
                            r"pickle\.load", re.IGNORECASE)


def library_reason(error: BaseException) -> str:
    """What went wrong, in a few words, from a library's exception — never the library's advice.

    torch suggests re-running ``torch.load`` with ``weights_only=False`` and numpy suggests loading
    "unsafely" with ``allow_pickle=True``: both would run code from the file, so any text of that
    kind is replaced by the exception's type.
    """
    text = str(error).strip()
    named = re.search(r"GLOBAL ([\w.]+)", text)
    if named:
        return f"it references the Python global {named.group(1)}, which plain weights never need"
    first = text.splitlines()[0][:160] if text else ""
    if not first or _UNSAFE_ADVICE.search(text):
        return f"its content is malformed ({type(error).__name__})"
    return f"{first} ({type(error).__name__})"


def _refused(param: str, name: str, found: str, allowed: str, fix: str = _REFUSED_FIX) -> WeightsMismatchError:
    return invalid(param, f"{name}: {found}", allowed, fix, cls=WeightsMismatchError)  # type: ignore[return-value]


# ---------------------------------------------------------------------- declared sizes
def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << 62)


def check_tensor_view(storage_elements: int, offset: Any, size: Any, stride: Any, *, param: str, name: str) -> int:
    """Refuse a declared tensor view unless it fits its storage and repeats no element; returns its element count.

    ``storage_elements`` is the number of elements the storage really holds; ``offset``, ``size``,
    ``stride`` are what the file declares (in elements). Refused: malformed values, more than
    :data:`MAX_TENSOR_ELEMENTS` elements, a view reaching past the storage, and any view in which two
    indices share an element (stride 0 with size > 1, or overlapping strides) — ``torch.save`` never
    writes those, and copying one allocates its full declared size from a few stored bytes.
    """
    dims, steps = list(size) if isinstance(size, (tuple, list)) else None, list(stride) if isinstance(stride, (tuple, list)) else None
    if (dims is None or steps is None or len(dims) != len(steps) or len(dims) > MAX_TENSOR_DIMS
            or not all(_is_count(v) for v in [offset, *dims, *steps])):
        raise _refused(param, name, f"a tensor declared with offset {offset!r}, shape {size!r}, strides {stride!r}",
                       f"non-negative integer offset, shape and strides of at most {MAX_TENSOR_DIMS} dimensions")
    count = math.prod(dims)
    if count > MAX_TENSOR_ELEMENTS:
        raise _refused(param, name, f"a tensor of shape {tuple(dims)} ({count} elements)",
                       f"at most {MAX_TENSOR_ELEMENTS} elements per tensor")
    if count == 0:
        return 0
    if offset + sum((d - 1) * s for d, s in zip(dims, steps)) >= storage_elements:
        raise _refused(param, name, f"a tensor of shape {tuple(dims)}, strides {tuple(steps)}, offset {offset} over a "
                       f"storage of {storage_elements} elements", "views that lie inside their storage")
    reach = 0  # largest offset the smaller-stride dimensions reach; the next stride must step past it
    for step, dim in sorted((s, d) for d, s in zip(dims, steps) if d > 1):
        if step <= reach:
            raise _refused(param, name, f"a tensor of shape {tuple(dims)} with strides {tuple(steps)} (an expanded or "
                           "overlapping view)", "views that repeat no element, as torch.save writes them")
        reach += (dim - 1) * step
    return count


class ViewBudget:
    """Running total of what a file's tensor views declare, in float32 bytes (the loaders convert to float32).

    Refused past :data:`VIEW_BUDGET_FACTOR` × the file's size: views that each fit their storage may
    still share one, and a few bytes per extra view would otherwise multiply the file's data.
    """

    def __init__(self, file_size: int, *, param: str, name: str) -> None:
        self.limit = VIEW_BUDGET_FACTOR * max(int(file_size), 1)
        self.used = 0
        self.param, self.name = param, name

    def charge(self, elements: int, element_size: int) -> None:
        self.used += elements * max(int(element_size), 4)
        if self.used > self.limit:
            raise _refused(self.param, self.name, f"tensors declaring {self.used} bytes (as float32) so far",
                           f"at most {VIEW_BUDGET_FACTOR} × the file's size ({self.limit} bytes)")


class _Inert:
    """Stands for an allowed global during a scan: takes any arguments, state and items, and does nothing."""

    global_name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _StorageDeclaration:
    """A storage as a pickle declares it: type name, element count, element size."""

    def __init__(self, type_name: str, numel: int) -> None:
        self.type_name, self.numel = type_name, numel
        self.element_size = STORAGE_ELEMENT_SIZES[type_name]

    @property
    def nbytes(self) -> int:
        return self.numel * self.element_size


_TENSOR_REBUILDS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}


class _DeclarationScan(pickle.Unpickler):
    """Reads a torch pickle without calling anything: collects declared storages and checks every tensor view.

    Every global must be in ``allowed`` and becomes an inert stand-in class, so no code — not even an
    allowed constructor — runs; persistent ids must be storage declarations.
    """

    def __init__(self, stream: io.BytesIO, *, allowed: frozenset[tuple[str, str]] | set[tuple[str, str]],
                 budget: ViewBudget, param: str, name: str) -> None:
        super().__init__(stream)
        self.allowed, self.budget, self.param, self.name = allowed, budget, param, name
        self.storages: dict[str, _StorageDeclaration] = {}
        self._stand_ins: dict[tuple[str, str], type] = {}

    def run(self) -> None:
        try:
            self.load()
        except WeightsMismatchError:
            raise
        except Exception as error:  # truncated or malformed pickles raise many types
            raise _refused(self.param, self.name, f"its pickle is malformed ({type(error).__name__})",
                           "a complete torch.save file") from None

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise _refused(self.param, self.name, f"it references the Python global {module}.{name}",
                           "tensors, storages and plain containers only (weights need nothing else)",
                           "Nothing from the file was run. If it is a pickled model or training state, save its "
                           "state_dict() with torch.save instead")
        if (module, name) not in self._stand_ins:
            scan = self
            body: dict[str, Any] = {"global_name": f"{module}.{name}"}
            if (module, name) in _TENSOR_REBUILDS:
                body["__init__"] = lambda stand_in, *args, **kwargs: scan._declare_view(args)
            self._stand_ins[(module, name)] = type(name, (_Inert,), body)
        return self._stand_ins[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise _refused(self.param, self.name, f"a persistent id of kind {_short(pid)}",
                           "storage declarations only (a pickled module class or source is refused)")
        storage_type, key, location, numel = pid[1:5]
        type_name = getattr(storage_type, "global_name", "").rpartition(".")[2]
        view = pid[5] if len(pid) == 6 else None
        if (type_name not in STORAGE_ELEMENT_SIZES or not isinstance(key, str) or not isinstance(location, str)
                or not _is_count(numel) or view is not None):
            raise _refused(self.param, self.name, f"a storage declared as {_short(pid)}",
                           "('storage', a torch storage type, key, location, element count)")
        declared = self.storages.setdefault(key, _StorageDeclaration(type_name, numel))
        if (declared.type_name, declared.numel) != (type_name, numel):
            raise _refused(self.param, self.name, f"storage {key!r} declared twice with different sizes",
                           "one size per storage")
        return declared

    def _declare_view(self, args: tuple[Any, ...]) -> None:
        if len(args) < 4 or not isinstance(args[0], _StorageDeclaration):
            raise _refused(self.param, self.name, "a tensor rebuilt without a storage",
                           "tensors over the file's own storages")
        storage = args[0]
        count = check_tensor_view(storage.numel, args[1], args[2], args[3], param=self.param, name=self.name)
        self.budget.charge(count, storage.element_size)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class _PlainUnpickler(pickle.Unpickler):
    """Reads plain values only (numbers, strings, containers): any global or persistent id is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} refused")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent id refused")


def read_plain_pickle(stream: io.BytesIO) -> Any:
    """One plain pickle from ``stream`` (raises ``pickle.UnpicklingError`` & co. on anything else)."""
    return _PlainUnpickler(stream).load()


def is_legacy_torch(data: bytes) -> bool:
    """A legacy (non-zip) ``torch.save`` file starts with a pickled magic number; nothing else is read."""
    try:  # never a full unpickler here: the first bytes of a hostile file may already name a global
        return read_plain_pickle(io.BytesIO(data[:64])) == _LEGACY_MAGIC
    except Exception:
        return False


def _scan_zip(handle: Any, size: int, *, allowed: Any, param: str, name: str) -> None:
    """Check a zip ``torch.save`` file: stored entries only, sizes within the file, storages as declared."""
    try:
        archive = zipfile.ZipFile(handle)
    except Exception as error:  # BadZipFile, OSError, ValueError, … for damaged archives
        raise _refused(param, name, f"a damaged zip archive ({type(error).__name__})", "a complete torch.save file") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ZIP_ENTRIES:
            raise _refused(param, name, f"{len(entries)} zip entries", f"at most {MAX_ZIP_ENTRIES}")
        for entry in entries:  # torch.save stores entries; a compressed one can inflate far beyond the file
            if entry.compress_type != zipfile.ZIP_STORED or entry.compress_size != entry.file_size:
                raise _refused(param, name, f"the compressed zip entry {entry.filename!r}",
                               "uncompressed entries, as torch.save writes them")
        declared = sum(entry.file_size for entry in entries)
        if declared > size:
            raise _refused(param, name, f"zip entries declaring {declared} bytes in a file of {size}",
                           "entries that fit in the file")
        programs = [e for e in entries if e.filename == "data.pkl" or e.filename.endswith("/data.pkl")]
        if len(programs) != 1:
            raise _refused(param, name, f"{len(programs)} data.pkl entries", "exactly one (a torch.save archive)")
        prefix = programs[0].filename[: -len("data.pkl")]
        try:
            program = archive.read(programs[0])
        except Exception as error:
            raise _refused(param, name, f"an unreadable data.pkl ({type(error).__name__})", "a complete torch.save file") from None
        scan = _DeclarationScan(io.BytesIO(program), allowed=allowed, budget=ViewBudget(size, param=param, name=name),
                                param=param, name=name)
        scan.run()
        records = {entry.filename: entry.file_size for entry in entries}
        for key, storage in scan.storages.items():
            stored = records.get(f"{prefix}data/{key}")
            if stored != storage.nbytes:
                raise _refused(param, name, f"storage {key!r} declared as {storage.nbytes} bytes but stored as "
                               f"{'no record' if stored is None else f'{stored} bytes'}", "storages stored in full")


def _scan_legacy(data: bytes, *, allowed: Any, param: str, name: str) -> None:
    """Check a legacy ``torch.save`` stream: magic, header, declarations, then each storage's stored count and bytes."""
    if _is_tar(data):
        raise _refused(param, name, "a tar archive (the format of PyTorch before 0.4)", "a zip or legacy torch.save file",
                       "Re-save the weights with a current torch.save")
    stream = io.BytesIO(data)
    try:
        magic, protocol, info = (read_plain_pickle(stream) for _ in range(3))
    except Exception:
        magic = protocol = info = None
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL or not isinstance(info, dict):
        raise _refused(param, name, "no torch.save header", "a file written by torch.save (zip or legacy format)")
    if info.get("little_endian") is not True:
        raise _refused(param, name, "a big-endian legacy file", "little-endian torch.save files",
                       "Re-save the weights with torch.save on a little-endian machine")
    scan = _DeclarationScan(stream, allowed=allowed, budget=ViewBudget(len(data), param=param, name=name),
                            param=param, name=name)
    scan.run()
    try:
        keys = read_plain_pickle(stream)
    except Exception:
        keys = None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or sorted(keys) != sorted(scan.storages):
        raise _refused(param, name, "a storage list that does not match the declared storages",
                       "every declared storage listed once")
    offset = stream.tell()
    for key in keys:  # each storage: its element count (int64), then its bytes
        storage = scan.storages[key]
        count = int.from_bytes(data[offset:offset + 8], "little", signed=True) if offset + 8 <= len(data) else None
        if count is None or offset + 8 + storage.nbytes > len(data):
            stored = "a truncated record"
        elif count != storage.numel:
            stored = f"{count} elements"
        else:
            stored = None
        if stored:
            raise _refused(param, name, f"storage {key!r} declared as {storage.numel} elements but stored as {stored}",
                           "storages stored in full")
        offset += 8 + storage.nbytes


def _is_tar(data: bytes) -> bool:
    try:  # exactly what torch's legacy loader tries first
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:"):
            return True
    except Exception:
        return False


def iter_tensors(value: Any, *, param: str, name: str, extra_types: tuple[type, ...] = (),
                 max_depth: int = 64) -> Iterator[torch.Tensor]:
    """Every distinct tensor in a loaded object (dicts, lists, tuples, sets, ``extra_types``' attributes).

    Iterative and cycle-safe; nesting deeper than ``max_depth`` (no weights file nests like that) is refused.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            yield item
            continue
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = item
        elif extra_types and isinstance(item, extra_types):
            children = vars(item).values()
        else:
            continue
        if depth >= max_depth:
            raise _refused(param, name, f"containers nested more than {max_depth} deep", "the flat layouts of weight files")
        stack.extend((child, depth + 1) for child in children)


def check_loaded_tensors(value: Any, *, file_size: int, param: str, name: str, extra_types: tuple[type, ...] = ()) -> None:
    """After loading: every tensor a dense CPU view inside its storage, all within the file's view budget."""
    budget = ViewBudget(file_size, param=param, name=name)
    for tensor in iter_tensors(value, param=param, name=name, extra_types=extra_types):
        if tensor.layout != torch.strided or tensor.device.type != "cpu":
            raise _refused(param, name, f"a {tensor.layout} tensor on {tensor.device}", "dense CPU tensors")
        size = tensor.element_size()
        count = check_tensor_view(tensor.untyped_storage().nbytes() // size, tensor.storage_offset(),
                                  tuple(tensor.shape), tuple(tensor.stride()), param=param, name=name)
        budget.charge(count, size)


# ---------------------------------------------------------------------- state dicts
def check_state_dict(state: Any, expected: Mapping[str, torch.Tensor], *, param: str, source: str, what: str,
                     fix: str) -> dict[str, torch.Tensor]:
    """Refuse a state dict unless its keys and shapes are exactly ``expected``'s; return it as a plain dict.

    ``expected`` is the model's own ``state_dict()`` (a model built on the meta device costs no memory,
    so this runs before the real model is allocated). The one-line error names up to four missing keys,
    unexpected keys, non-tensor values and shape mismatches (with counts), ``what`` the state should be
    and ``fix``.
    """
    if not isinstance(state, Mapping):
        raise invalid(param, f"{source} holds a {type(state).__name__}", f"a state dict of {what}", fix,
                      cls=WeightsMismatchError)
    state = dict(state)
    names = {str(key) for key in state}
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    missing = sorted(set(expected) - names)
    unexpected = sorted(names - set(expected))
    wrong = [f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})" for key, value in expected.items()
             if isinstance(state.get(key), torch.Tensor) and tuple(state[key].shape) != tuple(value.shape)]
    wrong += [f"{key} of dtype {state[key].dtype} (expected floating point)" for key, value in expected.items()
              if isinstance(state.get(key), torch.Tensor) and value.dtype.is_floating_point
              and not state[key].dtype.is_floating_point]
    groups = (("missing", "missing", missing), ("unexpected", "unexpected", unexpected),
              ("not tensors", "non-tensor", not_tensors), ("wrong shapes", "wrongly shaped", wrong))
    if any(items for *_, items in groups):
        # the echoed value stays short (counts); the first few names follow in the message's own words
        counts = ", ".join(f"{len(items)} {counted}" for _, counted, items in groups if items)
        details = "; ".join(f"{label}: {describe_names(items, 3)}" for label, _, items in groups if items)
        raise invalid(param, f"{source} with {counts}",
                      f"exactly the parameters and shapes of {what}", f"First differences — {details}. {fix}",
                      cls=WeightsMismatchError)
    return state


NetworkT = TypeVar("NetworkT", bound=torch.nn.Module)


def build_with_state(make_network: Callable[[], NetworkT], state: Any, *, param: str, source: str, what: str,
                     fix: str) -> NetworkT:
    """``make_network()`` whose parameters and buffers *are* ``state``'s tensors: no second copy of the weights.

    The network is built on the meta device (no memory, no random initialisation), ``state`` is
    compared with its ``state_dict()`` by :func:`check_state_dict` (``param``, ``source``, ``what`` and
    ``fix`` make its one-line error) before anything else, and each tensor is then assigned in place
    of the meta one (``load_state_dict(assign=True)``). Each becomes the network's own first: cast to
    the dtype the network declares (no copy when it already has it), contiguous, and copied when it
    is only part of its storage or its memory overlaps another tensor's (assigning those would pin
    the larger storage, or tie two parameters together). Returns the network on the CPU, in training
    mode, parameters requiring gradients as ``make_network`` made them (adapters freeze them).

    ``state``'s tensors must own their memory: not views of read-only buffers (``torch.frombuffer``
    of bytes) or of arrays someone else writes. ``make_network`` must create every tensor through
    torch's factory functions and keep none outside its state dict (a non-persistent buffer computed
    in ``__init__``, or a plain tensor attribute, would stay on the meta device): such a network is
    refused with a RuntimeError that names the tensor — compute it in ``forward`` or register it as a
    persistent buffer. Factories (``randn``, ``zeros``, ``full`` …) and scaling by a number cost
    nothing there; other tensor operations in ``__init__`` work too, but their first use imports
    ``torch._dynamo`` (about 70 MiB, see :class:`_MetaShortcuts`).
    """
    with torch.device("meta"), _MetaShortcuts():
        network = make_network()
    expected = network.state_dict()
    checked = check_state_dict(state, expected, param=param, source=source, what=what, fix=fix)
    owned = _owned_tensors({key: checked[key] for key in expected}, expected)
    network.load_state_dict(owned, strict=True, assign=True)
    left = [name for name, tensor in [*network.named_parameters(), *network.named_buffers()] if tensor.is_meta]
    left += [f"{prefix}.{key}" if prefix else key for prefix, module in network.named_modules()
             for key, value in vars(module).items() if isinstance(value, torch.Tensor) and value.is_meta]
    if left:
        raise RuntimeError(f"build_with_state: {type(network).__name__} keeps {describe_names(left)} outside its "
                           "state dict, so it has no value; compute it in forward or make it a persistent buffer")
    return network


#: factories whose arguments are a shape (varargs or one sequence) and keywords; answered as meta empties
_SHAPE_FACTORIES = frozenset({torch.randn, torch.rand, torch.zeros, torch.ones, torch.empty})
#: ``tensor OP number`` methods whose result has the tensor's shape and (floating) dtype
_SCALAR_ARITHMETIC = frozenset({torch.Tensor.__truediv__, torch.Tensor.__mul__, torch.Tensor.__rmul__,
                                torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__sub__,
                                torch.Tensor.__rsub__, torch.Tensor.div, torch.Tensor.mul})
#: keywords of a factory call the shortcut understands (anything else goes to torch itself)
_FACTORY_KEYWORDS = frozenset({"dtype", "device", "requires_grad", "generator"})


class _MetaShortcuts(torch.overrides.TorchFunctionMode):
    """Inside ``torch.device("meta")``: the calls network constructors make most, answered without torch.

    torch computes meta results of ``randn`` or ``meta / 2.0`` with Python reference kernels whose
    first use imports ``torch._dynamo`` (about 70 MiB resident, a second): more than the rest of a
    256-px load's overhead. Shape factories (``randn``, ``zeros`` …, ``full``) and a floating meta
    tensor times, over, plus or minus a Python number are answered here with ``torch.empty(…,
    device="meta")`` of the same shape and dtype, which is exactly what torch would return; every other
    call goes to torch unchanged (correct, only slower the first time).
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        shortcut = _meta_shortcut(func, args, kwargs)
        return shortcut if shortcut is not None else func(*args, **kwargs)


def _meta_shortcut(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    if func in _SHAPE_FACTORIES or func is torch.full:
        if set(kwargs) - _FACTORY_KEYWORDS or kwargs.get("device") not in (None, "meta", torch.device("meta")):
            return None
        dtype = kwargs.get("dtype")
        if func is torch.full:
            if len(args) != 2 or not isinstance(args[1], float):  # int and bool fills choose other dtypes
                return None
            shape = args[0]
        else:
            shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            return None
        made = torch.empty(tuple(shape), dtype=dtype or torch.get_default_dtype(), device="meta")
        return made.requires_grad_() if kwargs.get("requires_grad") else made
    if func in _SCALAR_ARITHMETIC and len(args) == 2 and not kwargs:
        tensor, number = args
        if (isinstance(tensor, torch.Tensor) and tensor.is_meta and tensor.dtype.is_floating_point
                and type(tensor) is torch.Tensor and isinstance(number, (int, float)) and not isinstance(number, bool)):
            return torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
    return None


def _owned_tensors(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state``'s tensors in ``expected``'s dtypes, each contiguous and alone over its own memory."""
    owned: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        tensor = tensor.detach().to(device="cpu", dtype=expected[key].dtype).contiguous()
        if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()  # a view of part of a storage would keep all of it alive
        owned[key] = tensor
    spans = sorted((tensor.data_ptr(), tensor.numel() * tensor.element_size(), key) for key, tensor in owned.items())
    reached = 0
    for start, length, key in spans:
        if length and start < reached:  # shares memory with a tensor before it (one tensor under two names…)
            owned[key] = owned[key].clone()
        reached = max(reached, start + length)
    return owned


def describe_names(names: list[str], limit: int = 4) -> str:
    """``"a, b, c, d, … (9 in all)"`` for an error message."""
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")
