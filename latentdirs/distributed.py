"""Several processes, one run: the plumbing of ``torchrun --nproc-per-node N -m latentdirs.cli …`` (docs/scale.md).

:func:`setup` reads the variables PyTorch's launcher sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), joins the process group and picks each rank's device (``auto`` and
``cuda`` become ``cuda:LOCAL_RANK``); outside a launcher it returns None and nothing changes, so a
single-process run stays exactly what it was.

The ranks exchange only small Python objects (which shards are finished, the manifest's records), so
the default group is always gloo, which carries them on every device; :attr:`Ranks.tensor_backend`
names the backend tensor collectives use (nccl on CUDA, gloo on the CPU) and
:meth:`Ranks.new_tensor_group` makes such a group for code that exchanges tensors.

Also here, for :func:`latentdirs.render.render_edits`: :func:`assign` (which shards a rank renders),
:class:`ResumableStaging` (a staging folder a rerun finds again) and :class:`Journal` (each finished
shard's records and its files' sizes and sha256, so a rerun skips what verifies).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from latentdirs.atomic import StagedDirectory, remove_abandoned_staging
from latentdirs.devices import resolve_device
from latentdirs.errors import InvalidValueError, LatentDirsError, OutputError, invalid

T = TypeVar("T")

#: the launcher's variables; all of RANK and WORLD_SIZE present means "launched"
ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
#: how long a rank waits for the others at a collective (rank 0 may verify a large resumed run meanwhile)
TIMEOUT = datetime.timedelta(hours=2)
#: resumable staging folders: a name :func:`latentdirs.atomic.remove_abandoned_staging` leaves alone
RESUME_PREFIX = ".latentdirs-resume-"


@dataclass(frozen=True)
class Ranks:
    """This process's place in a launched run: ``rank`` of ``world_size``, ``local_rank`` on its node,
    and the ``device`` it renders on. Collectives go through the default (gloo) process group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reads journals, writes the manifest and commits the run."""
        return self.rank == 0

    @property
    def tensor_backend(self) -> str:
        """The backend for tensor collectives on this device: ``"nccl"`` on CUDA, else ``"gloo"``."""
        return "nccl" if self.device.type == "cuda" else "gloo"

    def new_tensor_group(self) -> Any:
        """A process group of all ranks on :attr:`tensor_backend` (collective: every rank must call it)."""
        import torch.distributed as dist

        return dist.new_group(backend=self.tensor_backend)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value``, in rank order, on rank 0; None on the others."""
        import torch.distributed as dist

        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def on_main(self, function: Callable[[], T]) -> T:
        """Run ``function`` on rank 0 and return its result on every rank; if it raises, every rank raises
        (the others a copy), so no rank waits forever for one that failed."""
        outcome: tuple[bool, Any] | None = None
        failure: BaseException | None = None
        if self.is_main:
            try:
                outcome = (True, function())
            except Exception as error:  # noqa: BLE001 - re-raised below, on every rank
                failure = error
                copy = error if isinstance(error, LatentDirsError) else RuntimeError(f"rank 0: {error!r}")
                outcome = (False, copy)
        ok, value = self.broadcast(outcome)
        if failure is not None:
            raise failure
        if not ok:
            raise value
        return value


def data_parallel(module: torch.nn.Module, ranks: Ranks) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel over the ranks' tensor group (gloo on the CPU, nccl
    on GPUs): its gradients are averaged over the ranks in every backward pass. DDP also broadcasts rank
    0's initial parameters (which every rank seeded alike anyway)."""
    from torch.nn.parallel import DistributedDataParallel

    devices = [ranks.device] if ranks.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=devices, process_group=ranks.new_tensor_group())


def equal_share(batch_size: int, ranks: Ranks | None, *, param: str = "batch_size") -> slice:
    """The rows of every batch of ``batch_size`` this rank learns from: an equal, contiguous share (so the
    ranks' averaged gradients are the whole batch's mean loss's); all rows when not launched.
    Refuses a batch size that does not split evenly, naming the nearest one that does."""
    if ranks is None:
        return slice(None)
    if batch_size % ranks.world_size:
        nearest = max(ranks.world_size, batch_size - batch_size % ranks.world_size)
        raise invalid(param, batch_size, f"a multiple of the {ranks.world_size} processes (each learns from an "
                      "equal share of every batch)", f"Pass --{param.replace('_', '-')} {nearest}")
    share = batch_size // ranks.world_size
    return slice(ranks.rank * share, (ranks.rank + 1) * share)


def mean_over_ranks(value: torch.Tensor) -> float:
    """The mean of a scalar over the ranks (e.g. the whole batch's loss from the ranks' equal shares)."""
    import torch.distributed as dist

    total = value.detach().to("cpu", torch.float64).reshape(1)
    dist.all_reduce(total)  # the default (gloo) group: fine on every device
    return float(total) / dist.get_world_size()


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or anything that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _environment_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None and default is not None:
        return default
    try:
        value = int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise invalid(name, text, "a non-negative integer (set by torchrun)",
                      "Start the run with torchrun --nproc-per-node N -m latentdirs.cli …") from None
    if value < 0:
        raise invalid(name, text, "a non-negative integer (set by torchrun)")
    return value


def rank_device(device: str | torch.device, local_rank: int) -> torch.device:
    """The device of the rank with ``local_rank``: ``auto`` (when CUDA is visible) and ``cuda`` mean
    ``cuda:LOCAL_RANK``, one GPU per process; anything else is :func:`latentdirs.devices.resolve_device`'s."""
    name = str(device).strip().lower()
    if name in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise invalid("LOCAL_RANK", local_rank, f"0-{count - 1}: one process per GPU ({count} visible here)",
                          f"Launch at most {count} processes per node (torchrun --nproc-per-node {count})")
        return torch.device("cuda", local_rank)
    return resolve_device(device)


def check_one_kind(kinds: list[str]) -> None:
    """Refuse a run whose ranks render on different kinds of device (``kinds``: one per rank)."""
    if len(set(kinds)) > 1:
        shown = ", ".join(f"rank {rank}: {kind}" for rank, kind in enumerate(kinds))
        raise invalid("device", shown, "one kind of device on every rank",
                      "Give every process the same --device (auto picks each rank's GPU from LOCAL_RANK)")


def _import_dynamo_first() -> None:
    """Import ``torch._dynamo`` before the process group exists (about a second per rank).

    Why: imported later — the content/style split's Jacobians (forward-mode AD) import it on first use —
    it keeps 10 references to the default group (measured with ``sys.getrefcount``), so
    :func:`teardown` cannot free the group and its gloo threads outlive it; one that releases a collective's
    tensors during interpreter shutdown needs the GIL there and aborts the process ("terminate called without
    an active exception", seen on rank 0 of ``torchrun … vary`` about one run in eight). Imported first, it
    holds nothing of the group, and teardown joins the threads.
    """
    import importlib

    try:
        importlib.import_module("torch._dynamo")  # for its side effect only
    except Exception:  # noqa: BLE001 - a torch build without dynamo: nothing to hold the group either
        pass


def setup(device: str | torch.device = "auto") -> Ranks | None:
    """Join the launched run (the process group, gloo) and pick this rank's device; None when not launched.

    Every rank raises the same error when one rank's device is impossible or the ranks' devices mix kinds.
    """
    if not launched():
        return None
    import torch.distributed as dist

    rank, world_size = _environment_int("RANK"), _environment_int("WORLD_SIZE")
    local_rank = _environment_int("LOCAL_RANK", default=rank)
    if not 0 <= rank < world_size:
        raise invalid("RANK", rank, f"0-{world_size - 1} (WORLD_SIZE is {world_size})")
    if not dist.is_initialized():
        _import_dynamo_first()
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=TIMEOUT)
    try:
        chosen: torch.device | None = rank_device(device, local_rank)
        report = chosen.type
    except LatentDirsError as error:
        chosen, report = None, f"error:{error}"
    reports: list[str] = [""] * world_size
    dist.all_gather_object(reports, report)
    errors = [r[len("error:"):] for r in reports if r.startswith("error:")]
    if errors:
        raise InvalidValueError(errors[0])
    check_one_kind(reports)
    assert chosen is not None  # no error was reported, so this rank has its device
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    return Ranks(rank, world_size, local_rank, chosen)


def teardown() -> None:
    """Leave the process group (if joined); safe to call always. The group is freed here, its gloo threads
    joined (see :func:`_import_dynamo_first` for what kept it alive until interpreter shutdown)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def assign(count: int, ranks: Ranks, *, what: str, fix: str) -> list[int]:
    """The units of ``count`` (numbered 0 … count−1) that ``ranks.rank`` works on: every ``world_size``-th,
    starting at its rank, so neighbouring (similar-sized) units spread over the ranks.

    Refuses more ranks than units (``what`` says what a unit is, ``fix`` how to get more or use fewer ranks).
    """
    if count < ranks.world_size:
        raise invalid("--nproc-per-node", ranks.world_size, f"at most {count}, the number of {what} in this run",
                      fix)
    return list(range(ranks.rank, count, ranks.world_size))


# ---------------------------------------------------------------------- resumable output
class ResumableStaging(StagedDirectory):
    """A :class:`~latentdirs.atomic.StagedDirectory` whose folder is named by the run's ``key`` (a digest of
    what it renders), not by a process id: a rerun of the same run finds it again, with its :class:`Journal`.

    :meth:`commit` (inherited) moves the files into place, writes the index last and removes the folder;
    a failed run leaves it for the rerun (so nothing here calls :meth:`discard` on failure).
    """

    def __init__(self, directory: str | Path, key: str, *, create: bool = True) -> None:  # noqa: D107
        self.directory = Path(directory)
        self.path = self.directory / f"{RESUME_PREFIX}{key}"
        if create:
            remove_abandoned_staging(self.directory)  # other runs' killed staging; never RESUME_PREFIX folders
            try:
                self.path.mkdir(exist_ok=True)
            except OSError as error:
                raise OutputError(f"output: cannot write into {str(self.directory)!r} "
                                  f"({error.strerror or error}); choose a writable directory") from None

    def others(self) -> list[Path]:
        """Resumable folders of other runs (other keys) in the directory: unfinished runs never rerun."""
        return sorted(p for p in self.directory.glob(f"{RESUME_PREFIX}*") if p.is_dir() and p != self.path)


def run_key(description: Any) -> str:
    """A short digest of a JSON-able ``description`` of a run: equal descriptions, equal keys."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def file_digest(path: Path) -> tuple[int, str]:
    """``(size in bytes, sha256 hex)`` of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


class Journal:
    """The finished units of a resumable run: ``journal-r{rank}.jsonl`` files in its staging folder.

    One JSON line per finished unit, appended (and synced) after all its files are written:
    ``{"unit": n, "check": {...}, "files": {name: [size, sha256]}, "data": ...}``. A killed writer leaves
    at most a torn last line, which :meth:`finished` ignores; a later run with another number of ranks
    reads every rank's file.
    """

    def __init__(self, folder: Path, rank: int) -> None:
        self.folder = folder
        self.path = folder / f"journal-r{rank}.jsonl"

    def record(self, unit: int, check: dict[str, Any], files: list[str], data: Any) -> None:
        """Note ``unit`` finished: its ``files`` (relative to the folder) are hashed now."""
        sums = {name: list(file_digest(self.folder / name)) for name in dict.fromkeys(files)}
        line = json.dumps({"unit": unit, "check": check, "files": sums, "data": data}, separators=(",", ":"))
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def finished(self, expected: Callable[[int], dict[str, Any] | None]) -> dict[int, Any]:
        """``{unit: data}`` of the units with an entry that matches ``expected(unit)`` (None: no such unit) and
        whose files all exist with the recorded size and sha256 — per unit the last such entry, in whichever
        rank's journal it is; anything else is rendered again.

        Why every entry and not the last one read: a rerun deals the units left to the ranks afresh, so a
        damaged unit first journalled by rank 1 may be redone by rank 0, and rank 1's stale entry (read
        later) must not hide the redone one."""
        entries: dict[int, list[dict[str, Any]]] = {}
        for path in sorted(self.folder.glob("journal-r*.jsonl")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    entries.setdefault(int(entry["unit"]), []).append(entry)
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line of a killed run
        found: dict[int, Any] = {}
        for unit, candidates in sorted(entries.items()):
            check = expected(unit)
            verified = [e for e in candidates if check is not None and e.get("check") == check and self._verified(e)]
            if verified:
                found[unit] = verified[-1].get("data")
        return found

    def _verified(self, entry: dict[str, Any]) -> bool:
        files = entry.get("files")
        if not isinstance(files, dict):
            return False
        for name, recorded in files.items():
            if not isinstance(name, str) or name.startswith("/") or ".." in Path(name).parts:
                return False  # only files inside the staging folder are ever trusted
            path = self.folder / name
            try:
                if path.stat().st_size != recorded[0] or list(file_digest(path)) != list(recorded):
                    return False
            except (OSError, TypeError, IndexError):
                return False
        return True


# ---------------------------------------------------------------------- sharded inversion
def invert_tensors_sharded(generator: Any, images: torch.Tensor, ranks: Ranks, *,
                           progress: Callable[[int, int], None] | None = None, **options: Any) -> Any:
    """:func:`latentdirs.invert.invert_tensors` of ``images [N, 3, R, R]`` (in [−1, 1]) shared by the ranks;
    the merged :class:`~latentdirs.invert.InversionResult` on rank 0, None on the others.

    Every rank passes the same images and ``options``. Rank ``r`` optimises a contiguous block of whole
    batches (``batch_size`` images, the last one short), seeded as one process seeds them
    (``seed + first image``), so each image is optimised in the same batch as in one process: latents,
    classes, offsets, noise maps, losses and histories are the one-process ones (same kernels, as for
    edits: docs/scale.md). Per-image metrics are computed per block (equal up to the batch kernels'
    rounding); ``seconds`` is the slowest rank's. With an encoder, its starts are predicted per block.
    Refuses more ranks than batches. Not resumable: ``latentdirs invert`` uses
    :func:`latentdirs.invert_resume.invert_resumable`, which journals every batch beside the output file.
    """
    from latentdirs.invert import invert_tensors, inversion_options

    settings, _ = inversion_options(generator, **{k: v for k, v in options.items() if k in INVERSION_OPTION_NAMES})
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        return invert_tensors(generator, images, **options)  # its own refusal, the same on every rank
    size = settings.batch_size
    batches = -(-images.shape[0] // size)
    assign(batches, ranks, what=f"batches of {size} images", fix="Launch fewer processes, or give a smaller "
           "--batch-size")  # refuses idle ranks
    # a contiguous block of whole batches per rank (one call, one setup), sizes differing by one batch at most
    first = ranks.rank * batches // ranks.world_size * size
    stop = min(images.shape[0], (ranks.rank + 1) * batches // ranks.world_size * size)
    init = options.pop("init", None)
    part = invert_tensors(generator, images[first:stop], **{**options, "seed": settings.seed + first},
                          init=None if init is None else init[first:stop], progress=progress)
    parts = ranks.gather(part)
    return None if parts is None else merge_results(parts)


#: the options :func:`latentdirs.invert.inversion_options` validates (the others go to invert_tensors only)
INVERSION_OPTION_NAMES = ("space", "steps", "lr", "loss", "latent_noise", "penalty", "noise_maps", "noise_penalty",
                          "search", "batch_size", "seed", "start_candidates", "starts", "feature_offset", "offset_penalty",
                          "class_search")


def merge_results(parts: list[Any]) -> Any:
    """One :class:`~latentdirs.invert.InversionResult` of consecutive blocks' results (in image order): per-image
    tensors and lists concatenated, noise maps per layer, histories joined, ``seconds`` the longest."""
    import dataclasses

    first = parts[0]
    merged: dict[str, Any] = {}
    for spec in dataclasses.fields(first):
        values = [getattr(p, spec.name) for p in parts]
        if spec.name == "seconds":
            merged[spec.name] = max(values)
        elif any(v is None for v in values) or spec.name in ("options", "encoder", "start"):
            merged[spec.name] = values[0]
        elif isinstance(values[0], torch.Tensor):
            merged[spec.name] = torch.cat(values)
        elif spec.name == "noise":  # one [N, 1, R, R] tensor per layer
            merged[spec.name] = [torch.cat(maps) for maps in zip(*values)]
        elif isinstance(values[0], list):
            merged[spec.name] = [item for value in values for item in value]
        else:
            merged[spec.name] = values[0]
    return type(first)(**merged)


__all__ = ["INVERSION_OPTION_NAMES", "Journal", "Ranks", "ResumableStaging", "assign", "check_one_kind", "file_digest",
           "invert_tensors_sharded", "launched", "merge_results", "rank_device", "run_key", "setup", "teardown"]
