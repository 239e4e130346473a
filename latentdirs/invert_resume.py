"""Resumable inversion: ``latentdirs invert`` (one process or ``torchrun``) that a rerun finishes (docs/scale.md).

The images are cut into *units*, one batch each (``batch_size`` images, the last one short), each optimised
by its own :func:`latentdirs.invert.invert_tensors` call seeded ``seed + first image`` exactly as one process
seeds that batch, so a unit's result never depends on which process, run or rank count optimised it.

Each finished unit's part of the :class:`~latentdirs.invert.InversionResult` is written into a
:class:`~latentdirs.distributed.ResumableStaging` folder next to the latents file (named by
:func:`inversion_key`): its tensors as ``unit-NNNNN.safetensors``, its lists and numbers as
``unit-NNNNN.json`` (never pickle), then a :class:`~latentdirs.distributed.Journal` line with both files'
sizes and sha256. A rerun of the same run loads the units whose files verify and optimises the rest; a
damaged or missing part is optimised again, never loaded. Rank 0 (or the one process) merges the units in
image order; :meth:`ResumableInversion.finish` removes the folder once the latents file is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from latentdirs.distributed import (INVERSION_OPTION_NAMES, Journal, Ranks, ResumableStaging, assign, file_digest,
                                    merge_results, run_key)

#: InversionResult fields a unit's JSON holds; every other field but ``options`` is a tensor or tensor list
JSON_FIELDS = ("classes", "seconds", "history", "encoder", "start")
#: fields not written: ``options`` is the run's, ``targets`` the images themselves (as float32 CPU tensors)
NOT_WRITTEN = ("options", "targets")
#: fields that are None for some runs (no noise maps, no offsets, no classes): all batches of a run agree
OPTIONAL_FIELDS = ("classes", "noise", "psnr_with_noise", "offsets", "psnr_without_offset")


@dataclass
class ResumableInversion:
    """The merged result of a resumable inversion, and its staging folder (removed by :meth:`finish`).

    ``optimised`` and ``loaded`` are the units (batch numbers) this process optimised and, on rank 0 or the
    one process, the units a rerun took from the journal instead.
    """

    result: Any
    staging: ResumableStaging
    optimised: list[int]
    loaded: list[int]

    def finish(self) -> None:
        """Remove the staging folder: call it once the latents file is written (a crash before keeps it)."""
        self.staging.discard()


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (its values, whatever its device or layout)."""
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.sha256(f"{data.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _encoder_identity(encoder: Any) -> Any:
    """What identifies the encoder: its file's sha256, or the loaded encoder's weights' digest."""
    if encoder is None:
        return None
    if isinstance(encoder, (str, os.PathLike)):
        try:
            return {"file": file_digest(Path(encoder))[1]}
        except OSError:
            return {"path": str(encoder)}  # unreadable: invert_tensors refuses it in the first unit
    net = getattr(encoder, "net", None)
    if isinstance(net, torch.nn.Module):
        return {"weights": [tensor_digest(t) for _, t in sorted(net.state_dict().items())]}
    return {"object": type(encoder).__name__}


def inversion_key(generator: Any, images: torch.Tensor, out: str | Path, settings: Any, *, classes: Any = None,
                  encoder: Any = None, init: torch.Tensor | None = None) -> str:
    """The run key of an inversion: the generator (describe(), with its weights' fingerprint), the images'
    bytes, every validated option (``settings.as_json()``: seed and batch size included), the classes, the
    encoder, the given starts and the output path. Not the number of ranks: any of them resumes the run."""
    description = {"kind": "invert", "generator": generator.describe(), "images": tensor_digest(images),
                   "options": settings.as_json(), "classes": json.dumps(classes, default=str),
                   "encoder": _encoder_identity(encoder), "init": None if init is None else tensor_digest(init),
                   "out": str(Path(out).absolute())}
    return run_key(description)


def units_of(count: int, batch_size: int) -> list[tuple[int, int]]:
    """``(first, stop)`` of every batch of ``count`` images: the units a resumable inversion journals."""
    return [(first, min(count, first + batch_size)) for first in range(0, count, batch_size)]


# ---------------------------------------------------------------------- one unit's files
def _names(unit: int) -> tuple[str, str]:
    return f"unit-{unit:05d}.safetensors", f"unit-{unit:05d}.json"


def save_unit(folder: Path, unit: int, part: Any) -> list[str]:
    """Write ``part`` (one batch's InversionResult) as safetensors + JSON in ``folder``; return the file names."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    lists: dict[str, int] = {}
    for spec in dataclasses.fields(part):
        value = getattr(part, spec.name)
        if spec.name in JSON_FIELDS or spec.name in NOT_WRITTEN or value is None:
            continue
        if isinstance(value, torch.Tensor):
            tensors[spec.name] = value.detach().cpu().contiguous().clone()  # clone: safetensors refuses views
        else:  # a list of tensors (the noise maps, one per layer)
            lists[spec.name] = len(value)
            tensors.update({f"{spec.name}.{i}": t.detach().cpu().contiguous().clone() for i, t in enumerate(value)})
    tensor_name, json_name = _names(unit)
    save_file(tensors, str(folder / tensor_name))
    record = {name: getattr(part, name) for name in JSON_FIELDS}
    record["lists"] = lists
    (folder / json_name).write_text(json.dumps(record), encoding="utf-8")
    return [tensor_name, json_name]


def load_unit(folder: Path, unit: int, options: Any, targets: torch.Tensor, latent_shape: tuple[int, ...]) -> Any:
    """The InversionResult part of ``unit`` from its verified files; ``targets [n, 3, R, R]`` are its images
    (as invert_tensors returns them: float32, CPU); ``options`` replaces the unit's own (whose seed is
    ``seed + first image``); ``latent_shape`` is one latent's shape in ``options.space``.

    The journal's sha256 says the files are the ones written, not that they were written by this code: a
    folder edited by hand (files and journal together) is read as hostile — no pickle, and every field's
    type and shape checked — and refused with :class:`~latentdirs.errors.StagingError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from latentdirs.invert import InversionResult

    tensor_name, json_name = _names(unit)
    try:
        tensors = load_file(str(folder / tensor_name))
        record = json.loads((folder / json_name).read_text(encoding="utf-8"))
    except (OSError, ValueError, SafetensorError) as error:
        raise _damaged(folder, unit, f"unreadable ({error})") from None
    lists = record.get("lists") if isinstance(record, dict) else None
    if not isinstance(lists, dict) or any(name not in record for name in JSON_FIELDS) \
            or not all(isinstance(k, str) and isinstance(v, int) and 0 <= v <= 1024 for k, v in lists.items()):
        raise _damaged(folder, unit, f"its JSON lacks {', '.join(JSON_FIELDS)} or 'lists'")
    values: dict[str, Any] = {name: record[name] for name in JSON_FIELDS}
    values["targets"] = targets.detach().to("cpu", torch.float32)
    try:
        for spec in dataclasses.fields(InversionResult):
            if spec.name in JSON_FIELDS or spec.name in NOT_WRITTEN:
                continue
            if spec.name in lists:
                values[spec.name] = [tensors[f"{spec.name}.{i}"] for i in range(lists[spec.name])]
            else:
                values[spec.name] = tensors.get(spec.name)
    except KeyError as error:
        raise _damaged(folder, unit, f"tensor {error} is missing") from None
    _check_part(folder, unit, values, len(targets), latent_shape)
    return InversionResult(options=options, **values)


def _check_part(folder: Path, unit: int, values: dict[str, Any], count: int, latent_shape: tuple[int, ...]) -> None:
    """Refuse a unit whose fields are not those :func:`save_unit` writes for ``count`` images."""
    per_image = {"latents": (count, *latent_shape), "reconstructions": tuple(values["targets"].shape)}
    for name in ("psnr", "ms_ssim", "error", "distance", "psnr_with_noise", "psnr_without_offset"):
        per_image[name] = (count,)
    for name, value in values.items():
        if name in JSON_FIELDS or name == "targets" or value is None:
            continue
        for tensor in value if isinstance(value, list) else [value]:
            wanted = per_image.get(name)
            if tensor.dtype != torch.float32 or tensor.dim() == 0 or tensor.shape[0] != count \
                    or (wanted is not None and tuple(tensor.shape) != wanted):
                raise _damaged(folder, unit, f"{name} is {tensor.dtype} {tuple(tensor.shape)}, not float32 "
                               f"{wanted or (count, '…')}")
    if values["latents"] is None or values["reconstructions"] is None:
        raise _damaged(folder, unit, "latents or reconstructions are missing")
    classes, history = values["classes"], values["history"]
    if not (classes is None or (isinstance(classes, list) and len(classes) == count
                                and all(type(c) is int for c in classes))) \
            or not isinstance(history, list) or not all(isinstance(h, list) for h in history) \
            or not isinstance(values["seconds"], (int, float)) or not isinstance(values["start"], str) \
            or not (values["encoder"] is None or isinstance(values["encoder"], dict)):
        raise _damaged(folder, unit, "its classes, history, seconds, start or encoder are not those invert writes")


def _damaged(folder: Path, unit: int, reason: str) -> Exception:
    from latentdirs.errors import StagingError

    return StagingError(f"resume folder: batch {unit} in {str(folder)!r} is damaged: {reason}; allowed: the files "
                        "invert staged there. Delete the folder and run the command again")


# ---------------------------------------------------------------------- the run
def invert_resumable(generator: Any, images: torch.Tensor, out: str | Path, ranks: Ranks | None = None, *,
                     progress: Callable[[int, int], None] | None = None,
                     **options: Any) -> ResumableInversion | None:
    """:func:`latentdirs.invert.invert_tensors` of ``images [N, 3, R, R]`` (in [−1, 1]), resumable, one process
    (``ranks`` None) or shared by the ranks of a launched run; returns the merged result on rank 0 (or the one
    process), None on the other ranks. ``out`` is the latents file the caller writes: the staging folder lies
    beside it. Every rank passes the same arguments.

    Latents, classes, offsets, noise maps, losses, per-image metrics and histories equal an uninterrupted
    run's, bit for bit, whatever the ranks and interruptions (each batch is computed alone, seeded as one
    process seeds it). ``seconds`` is the sum of the batches' optimisation times (those of an interrupted
    run included); the encoder's record is the first batch's, its ``seconds`` summed. ``progress(done,
    total)`` counts this process's optimisation steps. Refuses more ranks than batches.
    """
    from latentdirs.invert import inversion_options

    settings, model = inversion_options(generator, **{k: v for k, v in options.items() if k in INVERSION_OPTION_NAMES})
    size = generator.resolution
    if not isinstance(images, torch.Tensor) or tuple(images.shape[1:]) != (3, size, size) or images.shape[0] == 0 \
            or not bool(torch.isfinite(images).all()):
        from latentdirs.invert import invert_tensors

        invert_tensors(generator, images, **options)  # its own refusal (the same on every rank), before any file
    units = units_of(images.shape[0], settings.batch_size)
    if ranks is not None:
        assign(len(units), ranks, what=f"batches of {settings.batch_size} images", fix="Launch fewer processes, "
               "or give a smaller --batch-size")  # refuses idle ranks before any collective
    encoder = _loaded_encoder(generator, options.get("encoder"))
    key = inversion_key(generator, images, out, settings, classes=options.get("classes"),
                        encoder=options.get("encoder"), init=options.get("init"))
    directory = Path(out).parent

    def expected(unit: int) -> dict[str, int] | None:
        return {"first": units[unit][0], "stop": units[unit][1]} if 0 <= unit < len(units) else None

    def prepare() -> list[int]:
        staging = ResumableStaging(directory, key)
        journalled = Journal(staging.path, 0).finished(expected)
        return [unit for unit in sorted(journalled) if _loads(staging.path, unit, images, units, settings, model.shape)]

    finished = prepare() if ranks is None else ranks.on_main(prepare)
    staging = ResumableStaging(directory, key, create=False)
    todo = [unit for unit in range(len(units)) if unit not in finished]
    mine = todo if ranks is None else todo[ranks.rank::ranks.world_size]  # the units left, dealt round-robin
    _optimise(generator, images, units, mine, staging, Journal(staging.path, 0 if ranks is None else ranks.rank),
              {**options, "encoder": encoder}, settings.seed, progress)
    merged: list[Any] = []

    def merge() -> None:
        merged.append(_merge(staging.path, images, units, expected, settings, model.shape))

    if ranks is None:
        merge()
    else:
        ranks.barrier()  # every rank's units are journalled
        ranks.on_main(merge)  # every rank raises if rank 0 cannot merge
    if not merged:
        return None
    return ResumableInversion(result=merged[0], staging=staging, optimised=mine, loaded=finished)


def _loads(folder: Path, unit: int, images: torch.Tensor, units: list[tuple[int, int]], settings: Any,
           latent_shape: tuple[int, ...]) -> bool:
    """Whether a journalled unit's files load as a part (a hand-edited folder's may not: the unit is redone)."""
    from latentdirs.errors import StagingError

    first, stop = units[unit]
    try:
        load_unit(folder, unit, settings, images[first:stop], latent_shape)
    except StagingError:
        return False
    return True


def _loaded_encoder(generator: Any, encoder: Any) -> Any:
    """A path is loaded once here, not once per batch (each unit is its own invert_tensors call)."""
    if not isinstance(encoder, (str, os.PathLike)):
        return encoder
    from latentdirs.encoder import Encoder

    return Encoder.load(encoder, generator=generator)


def _optimise(generator: Any, images: torch.Tensor, units: list[tuple[int, int]], mine: list[int],
              staging: ResumableStaging, journal: Journal, options: dict[str, Any], seed: int,
              progress: Callable[[int, int], None] | None) -> None:
    """Optimise the units ``mine``, one invert_tensors call each, writing and journalling each when done."""
    import importlib

    # the module (``latentdirs.invert`` is also a function), its attribute looked up per call: a test may wrap it
    inversion = importlib.import_module("latentdirs.invert")

    init = options.pop("init", None)
    steps_before = 0
    for number, unit in enumerate(mine):
        first, stop = units[unit]
        reported = [0]

        def advance(done: int, total: int, left: int = len(mine) - number) -> None:
            reported[0] = total
            if progress is not None:  # the later units are assumed as long as this one
                progress(steps_before + done, steps_before + total * left)

        part = inversion.invert_tensors(generator, images[first:stop], **{**options, "seed": seed + first},
                                        init=None if init is None else init[first:stop], progress=advance)
        journal.record(unit, {"first": first, "stop": stop}, save_unit(staging.path, unit, part), None)
        steps_before += reported[0]


def _merge(folder: Path, images: torch.Tensor, units: list[tuple[int, int]], expected: Callable[[int], Any],
           settings: Any, latent_shape: tuple[int, ...]) -> Any:
    """Every unit's verified part, merged in image order (rank 0 / the one process)."""
    from latentdirs.errors import StagingError

    finished = Journal(folder, 0).finished(expected)
    missing = [unit for unit in range(len(units)) if unit not in finished]
    if missing:  # a rank's files vanished or changed after it journalled them: the rerun redoes them
        raise StagingError(f"resume folder: batches {missing} are missing from {str(folder)!r} or changed after "
                           "they were written; allowed: the files invert staged there. Run the command again: it "
                           "redoes those batches")
    parts = [load_unit(folder, unit, settings, images[first:stop], latent_shape)
             for unit, (first, stop) in enumerate(units)]
    try:
        if any(len({getattr(p, name) is None for p in parts}) > 1 for name in OPTIONAL_FIELDS):
            raise RuntimeError("noise maps, offsets or classes in some batches only")
        result = merge_results(parts)
    except RuntimeError as error:  # parts of different kinds, or tensors whose later dimensions differ
        raise StagingError(f"resume folder: the batches in {str(folder)!r} do not fit together ({error}); allowed: "
                           "the files invert staged there. Delete the folder and run the command again") from None
    result.seconds = sum(p.seconds for p in parts)
    if result.encoder is not None:
        result.encoder = {**result.encoder,
                          "seconds": round(sum((p.encoder or {}).get("seconds", 0.0) for p in parts), 4)}
    return result


__all__ = ["ResumableInversion", "inversion_key", "invert_resumable", "load_unit", "save_unit",
           "tensor_digest", "units_of"]
