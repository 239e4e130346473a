"""Size bombs: small files (and arguments) that declare huge allocations, each read in a forked child
whose peak memory and time are measured.

``build_bombs(folder)`` writes the files and returns the cases; ``python -m tests.hostile.bombs CASES
RESULTS`` (JSON in, JSON out) imports latentdirs once, then forks one child per case: the child caps its
address space (a safety net: a bomb that got through fails to allocate instead of exhausting the
machine — and such a failure is *not* counted as a refusal), records ``ru_maxrss`` before and after
reading, and reports whether a LatentDirsError refused the input. The forked children start from the
same warm interpreter, so the measured growth is what reading the input cost, not the imports.
"""

from __future__ import annotations

import collections
import io
import json
import os
import resource
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.hostile import files as F

#: growth in peak RSS allowed beyond twice the input's size (interpreter work, small buffers)
MARGIN = 64 << 20
#: address space a child may add to what it has at the fork (the safety net)
SAFETY_NET = 3 << 30
#: a refusal must come faster than this
SECONDS = 10.0


#: every bomb of the catalogue (build_bombs writes exactly these, in this order)
BOMB_IDS = [
    "stylegan2-pkl:stride0-40GB", "stylegan2-pkl:stride0-4GB-under-cap", "stylegan2-pkl:expanded-2d-10GB",
    "stylegan2-pkl:overlapping-strides-10GB", "stylegan2-pkl:view-past-storage", "stylegan2-pkl:offset-past-storage",
    "stylegan2-pkl:inner-storage-declares-8GB", "stylegan2-pkl:numpy-reconstruct-10GB",
    "stylegan2-pkl:numpy-ndarray-called-10GB", "stylegan2-pkl:numpy-state-declares-4GB",
    "stylegan2-pkl:many-views-of-one-storage", "stylegan2-pkl:module-cycle-4MB-x1000",
    "stylegan2-pkl:one-tensor-5000-names", "rosinality:shapes-imply-90GB-network", "rosinality-pt:stride0-4GB",
    "rosinality-pt:stride0-4GB-legacy", "rosinality-pt:storage-declares-4GB", "rosinality-pt:storage-declares-8GB-legacy",
    "rosinality-pt:deflated-record-100MB", "rosinality-pt:legacy-tar", "biggan:config-19GiB-1-byte-weights",
    "biggan:config-2GB-1-byte-weights", "biggan:config-10MB-of-padding", "biggan:config-nested-30000-deep",
    "biggan:config-3000-layers", "biggan:config-60000-digit-number", "biggan:weights-stride0-4GB",
    "directions:header-nested-1000000-deep", "directions:header-layers-1000000", "directions:header-labels-100000",
    "directions:safetensors-header-length-2^62", "directions:safetensors-tensor-declares-4TB",
    "trajectories:tensor-declares-4TB", "import:npy-declares-4TB", "import:npy-declares-over-cap",
    "import:npz-deflated-100MB", "import:npz-member-declares-4GB", "argument:--seeds 0-99999999999",
    "argument:--seeds 0-30000000", "argument:--layers 0-3000000", "argument:--layers 0-30000000",
    "argument:--alphas 0:1:100000000", "argument:--alphas 5000001 values", "argument:--indices 0-30000000",
    "argument:--opt nested 100000 deep", "argument:--pairs 10^12",
]


def _case(cases: list[dict], name: str, kind: str, target: Any, size: int | None = None, **extra: Any) -> None:
    cases.append({"id": name, "kind": kind, "target": str(target) if isinstance(target, Path) else target,
                  "size": size if size is not None else _size(target), **extra})


def _size(target: Any) -> int:
    if isinstance(target, Path):
        return sum(p.stat().st_size for p in target.iterdir()) if target.is_dir() else target.stat().st_size
    return len(json.dumps(target))


def build_bombs(folder: Path, direction_file: Path, real: dict[str, Path]) -> list[dict]:
    """Every bomb of the catalogue as a case ``{"id", "kind", "target", "size"}`` (files written in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[dict] = []
    pickles = {
        # the case: a few hundred bytes, one stride-0 "expanded" tensor of 10^10 floats (40 GB)
        "stride0-40GB": {"w": F.Rebuild(F.storage(1), 0, (10**10,), (0,))},
        "stride0-4GB-under-cap": {"w": F.Rebuild(F.storage(1), 0, (10**9,), (0,))},
        "expanded-2d-10GB": {"w": F.Rebuild(F.storage(50_000), 0, (50_000, 50_000), (0, 1))},
        "overlapping-strides-10GB": {"w": F.Rebuild(F.storage(100_000), 0, (50_000, 50_000), (1, 1))},
        "view-past-storage": {"w": F.Rebuild(F.storage(4), 0, (10**9,), (1,))},
        "offset-past-storage": {"w": F.Rebuild(F.storage(4), 2**40, (4,), (1,))},
        "inner-storage-declares-8GB": {"w": F.Rebuild(F.LoadFromBytes(F.legacy_storage_blob(2**31 - 1, 4)), 0, (4,), (1,))},
        "numpy-reconstruct-10GB": {"w": F.Reconstruct(np.ndarray, (10**10,))},
        "numpy-ndarray-called-10GB": {"w": F.Payload(np.ndarray, (10**10,))},
        "numpy-state-declares-4GB": {"w": F.ArrayState((1, (10**9,), np.dtype("f4"), False, b"\0" * 16))},
    }
    shared = F.storage(1 << 18)  # 1 MiB, viewed whole by 3000 tensors: 3 GB declared
    pickles["many-views-of-one-storage"] = {f"w{i}": F.Rebuild(shared, 0, (1 << 18,), (1,)) for i in range(3000)}
    for name, tensors in pickles.items():
        _case(cases, f"stylegan2-pkl:{name}", "stylegan2", F.write(folder / f"{name}.pkl", F.nvlabs_with(tensors)))
    # a module that contains itself, holding 4 MB: copied once per recursion level before (≈ 4 GB)
    meta = F.module_meta({"w": torch.zeros(10**6)})
    record = F.Record(meta)
    meta["state"]["_modules"]["again"] = record
    _case(cases, "stylegan2-pkl:module-cycle-4MB-x1000", "stylegan2",
          F.write(folder / "cycle.pkl", F.persistent_pickle({"G_ema": record})))
    # one 4 MB tensor under 5000 names: cloned per name before (20 GB)
    big = torch.zeros(10**6)
    _case(cases, "stylegan2-pkl:one-tensor-5000-names", "stylegan2",
          F.write(folder / "names.pkl", F.nvlabs_with({f"w{i}": big for i in range(5000)})))
    # shapes that imply a 90 GB network: conv1 [50000, 1, 3, 3] stored, [50000, 50000, 3, 3] implied
    from tests.stylegan2_fixtures import random_network, rosinality_state, tiny_config

    state = rosinality_state(random_network(tiny_config()))
    state["conv1.conv.weight"] = torch.zeros(1, 50_000, 1, 3, 3)
    _case(cases, "rosinality:shapes-imply-90GB-network", "stylegan2",
          F.write(folder / "implied.pt", F.torch_bytes({"g_ema": state, "latent_avg": torch.zeros(16)})))
    torch_files = {
        "stride0-4GB": F.torch_declaring((10**9,), (0,)),
        "stride0-4GB-legacy": F.torch_declaring((10**9,), (0,), legacy=True),
        "storage-declares-4GB": F.torch_declaring((4,), (1,), numel=10**9),
        "storage-declares-8GB-legacy": F.torch_declaring((4,), (1,), numel=2**31 - 1, legacy=True),
        "deflated-record-100MB": _deflated_torch_file(25_000_000),
        "legacy-tar": _tar_file(),
    }
    for name, data in torch_files.items():
        _case(cases, f"rosinality-pt:{name}", "stylegan2", F.write(folder / f"{name}.pt", data))
    tiny_config_json = (real["biggan"] / "config.json").read_text()
    base = json.loads(tiny_config_json)
    configs = {
        # a few hundred bytes of JSON, 5 G parameters (19 GiB) — and a 1-byte weights file
        "config-19GiB-1-byte-weights": ({**base, "channel_width": 1600, "output_dim": 128,
                                         "layers": [[up, 16, 16] for up in (True,) * 5]}, b"\0"),
        "config-2GB-1-byte-weights": ({**base, "channel_width": 256}, b"\0"),
        "config-10MB-of-padding": (" " * 10_000_000 + tiny_config_json, b"\0"),
        "config-nested-30000-deep": ("[" * 30_000 + "]" * 30_000, b"\0"),
        "config-3000-layers": ({**base, "layers": [[False, 1, 1]] * 3000}, b"\0"),
        "config-60000-digit-number": ('{"channel_width": ' + "9" * 60_000 + "}", b"\0"),
        "weights-stride0-4GB": (tiny_config_json, F.rewrite_zip(F.torch_declaring((10**9,), (0,)),
                                                                extra={"archive/padding": bytes(300_000)})),
    }
    for name, (config, weights) in configs.items():
        _case(cases, f"biggan:{name}", "biggan", F.biggan_dir(folder / f"biggan-{name}", config, weights))
    header = json.loads(F.safetensors_header(direction_file.read_bytes())["__metadata__"]["latentdirs"])
    vectors_file = direction_file.read_bytes()
    directions = {
        "header-nested-1000000-deep": F.with_header(vectors_file, None, raw="[" * 1_000_000 + "]" * 1_000_000),
        "header-layers-1000000": F.with_header(vectors_file, {**header, "layers": [0] * 1_000_000}),
        "header-labels-100000": F.with_header(vectors_file, {**header, "labels": {str(i): "x" for i in range(100_000)}}),
        "safetensors-header-length-2^62": (2**62).to_bytes(8, "little") + b"{}",
        "safetensors-tensor-declares-4TB": F.raw_safetensors(
            {"directions": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}),
    }
    for name, data in directions.items():
        _case(cases, f"directions:{name}", "directions", F.write(folder / f"{name}.safetensors", data))
    _case(cases, "trajectories:tensor-declares-4TB", "trajectories", F.write(folder / "traj.safetensors", F.raw_safetensors(
        {"__metadata__": {"latentdirs": "trajectories/1"},
         "z0": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}})))
    imports = {
        "npy-declares-4TB": _npy_declaring((10**12,)),
        "npy-declares-over-cap": _npy_declaring((2**27,)),
        "npz-deflated-100MB": _deflated_npz(25_000_000),
        "npz-member-declares-4GB": _npz_with(_npy_declaring((10**9,))),
    }
    for name, data in imports.items():
        suffix = ".npz" if name.startswith("npz") else ".npy"
        _case(cases, f"import:{name}", "import", F.write(folder / f"{name}{suffix}", data))
    spec = str(direction_file)
    arguments = {
        "--seeds 0-99999999999": ["edit", spec, "-g", "synthetic", "--seeds", "0-99999999999", "-o", str(folder / "o1")],
        "--seeds 0-30000000": ["edit", spec, "-g", "synthetic", "--seeds", "0-30000000", "-o", str(folder / "o2")],
        "--layers 0-3000000": ["discover", "synthetic", "--layers", "0-3000000", "-o", str(folder / "o3.safetensors")],
        "--layers 0-30000000": ["discover", "synthetic", "--layers", "0-30000000", "-o", str(folder / "o4.safetensors")],
        "--alphas 0:1:100000000": ["edit", spec, "-g", "synthetic", "--alphas", "0:1:100000000", "-o", str(folder / "o5")],
        "--alphas 5000001 values": ["edit", spec, "-g", "synthetic", "--alphas", "0," * 5_000_000 + "0",
                                      "-o", str(folder / "o6")],
        "--indices 0-30000000": ["edit", spec, "-g", "synthetic", "--indices", "0-30000000", "-o", str(folder / "o7")],
        "--opt nested 100000 deep": ["discover", "synthetic", "--opt", "steps=" + "[" * 100_000, "-o",
                                     str(folder / "o8.safetensors")],
        "--pairs 10^12": ["evaluate", spec, "-g", "synthetic", "--pairs", str(10**12), "--report", str(folder / "o9")],
    }
    for name, args in arguments.items():
        _case(cases, f"argument:{name}", "cli", args, size=sum(len(a) for a in args))
    assert [case["id"] for case in cases] == BOMB_IDS, "BOMB_IDS and build_bombs disagree"
    return cases


def _deflated_torch_file(numel: int) -> bytes:
    """A zip torch file whose data/0 record (``numel`` zeros, declared truthfully) is deflate-compressed."""
    small = F.torch_bytes({"w": torch.zeros(4)})
    program = F.lie_numel(F.data_pkl(small), numel)
    program = program.replace(b"K\x00K\x04\x85", b"K\x00J" + numel.to_bytes(4, "little") + b"\x85")
    source = zipfile.ZipFile(io.BytesIO(small))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename.endswith("data/0"):
                entry = zipfile.ZipInfo(info.filename)
                entry.compress_type = zipfile.ZIP_DEFLATED
                with target.open(entry, "w", force_zip64=True) as record:
                    _write_zeros(record, numel * 4)
            else:
                target.writestr(info.filename, program if info.filename.endswith("data.pkl") else source.read(info))
    return out.getvalue()


def _write_zeros(handle: Any, count: int) -> None:
    chunk = bytes(1 << 20)
    while count > 0:
        handle.write(chunk[: min(count, len(chunk))])
        count -= len(chunk)


def _tar_file() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name in ("storages", "tensors", "pickle"):
            info = tarfile.TarInfo(name)
            info.size = 4
            archive.addfile(info, io.BytesIO(b"\x80\x02N."))
    return out.getvalue()


def _npy_declaring(shape: tuple[int, ...]) -> bytes:
    """An .npy file whose header declares ``shape`` float32 but which stores 16 bytes."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return out.getvalue() + bytes(16)


def _npz_with(member: bytes, name: str = "lat_comp.npy") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, member)
    return out.getvalue()


def _deflated_npz(numel: int) -> bytes:
    """An .npz whose lat_comp.npy (``numel`` float32 zeros, declared truthfully) is deflate-compressed."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (numel // 16, 16)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("lat_comp.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            _write_zeros(member, numel * 4)
    return out.getvalue()


# ---------------------------------------------------------------------- the measuring runner
def _read(case: dict, synthetic: Any) -> tuple[bool, str]:
    """Read one case as a user would; (refused by a LatentDirsError or a usage error, the message)."""
    import latentdirs
    from latentdirs.directions import Directions
    from latentdirs.importers import import_directions
    from latentdirs.inversion import TrajectoryData

    kind, target = case["kind"], case["target"]
    if kind == "cli":
        from click.testing import CliRunner

        from latentdirs.cli.main import cli

        result = CliRunner().invoke(cli, target, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            return False, f"{type(result.exception).__name__}: {result.exception}"
        errors = [line for line in (result.stderr or result.output).splitlines() if line.startswith("Error:")]
        return result.exit_code in (1, 2) and len(errors) == 1, errors[0] if errors else result.output[-300:]
    calls = {"stylegan2": lambda: latentdirs.load_generator(f"stylegan2:{target}", device="cpu"),
             "biggan": lambda: latentdirs.load_generator(f"biggan:{target}", device="cpu"),
             "directions": lambda: Directions.load(target),
             "trajectories": lambda: TrajectoryData.load(target),
             "import": lambda: import_directions(target, synthetic)}
    try:
        calls[kind]()
    except latentdirs.LatentDirsError as error:
        return True, str(error)
    except BaseException as error:  # noqa: BLE001 — reported, then judged by the test
        return False, f"{type(error).__name__}: {str(error)[:300]}"
    return False, "accepted"


def _measure(case: dict, synthetic: Any) -> dict:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: cap, read, report, leave without running the parent's cleanup
        os.close(read_end)
        result: dict[str, Any] = {}
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            limit = _address_space() + SAFETY_NET
            resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            start = time.perf_counter()
            refused, message = _read(case, synthetic)
            result = {"refused": refused, "message": message[:600], "seconds": time.perf_counter() - start,
                      "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before}
        except BaseException as error:  # noqa: BLE001
            result = {"refused": False, "message": f"runner: {type(error).__name__}: {error}", "seconds": 0, "peak": 0}
        os.write(write_end, json.dumps(result).encode())
        os.close(write_end)
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 1 << 16):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(child, 0)
    if not chunks:
        return {"refused": False, "message": f"child died (status {status})", "seconds": 0, "peak": 0}
    return json.loads(b"".join(chunks))


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 8 << 30


def main(cases_path: str, results_path: str) -> None:
    torch.set_num_threads(1)  # forked children must not inherit a busy thread pool
    import pytorch_pretrained_biggan  # noqa: F401 — imported before forking, so no child pays (or counts) it

    import latentdirs
    from latentdirs.cli.main import cli  # noqa: F401

    synthetic = latentdirs.load_generator("synthetic", device="cpu")
    cases = json.loads(Path(cases_path).read_text())
    results = collections.OrderedDict()
    for case in cases:
        results[case["id"]] = {**case, **_measure(case, synthetic)}
        results[case["id"]].pop("target", None)
    Path(results_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
