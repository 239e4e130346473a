"""Produce ``reference/<case>.{safetensors,json}`` by running NVIDIA's StyleGAN3 code (not part of CI).

    .venv/bin/python -m tests.stylegan3_fixtures.make_reference --nvlabs /tmp/nvlabs-stylegan3 [--shim DIR]

For each case: build NVIDIA's ``training.networks_stylegan3.Generator`` with the constructor kwargs
NVIDIA's train.py would pass (tiny channels), make its weights look trained (seeded), pickle
``dict(G_ema=G)`` through NVIDIA's own persistence into a temporary folder, read that pickle back with
our restricted unpickler to record the layout, and record NVIDIA's forward outputs on fixed inputs.
NVIDIA's pickle itself (which embeds its source) is deleted; only tensors and the layout are kept.
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import platform
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from latentdirs.generators.stylegan2.unpickle import restricted_load
from tests.stylegan3_fixtures import CASES, REFERENCE_DIR, record_layout, record_state_dict

MIRROR = Path("/work/.mirror/NVlabs+stylegan3/repo")
Z_DIM = W_DIM = 16
PSI, CUTOFF = 0.7, 4
TRANSLATE, ROTATE = (0.1, 0.0), 15.0
#: train.py: magnitude_ema_beta = 0.5 ** (batch / 20k images); a batch of 32
MAGNITUDE_EMA_BETA = 0.5 ** (32 / (20 * 1e3))

T_CONFIG = {"channel_base": 256, "channel_max": 16}
#: train.py for stylegan3-r: conv_kernel 1, channel_base and channel_max doubled, radial filters
R_CONFIG = {"conv_kernel": 1, "channel_base": 512, "channel_max": 32, "use_radial_filters": True}
#: train.py --fp32 passes these; without it the constructors' defaults (num_fp16_res 4, conv_clamp 256) apply
FP32 = {"num_fp16_res": 0, "conv_clamp": None}

CASE_KWARGS: dict[str, dict] = {
    "t32": {"img_resolution": 32, **T_CONFIG, **FP32},
    "r32": {"img_resolution": 32, **R_CONFIG, **FP32},
    "t32-fp16": {"img_resolution": 32, **T_CONFIG},
    "r32-fp16": {"img_resolution": 32, **R_CONFIG},
    # 256-px shape: NVIDIA's layer count and sizes at 256 px; channel_base 512 keeps the last layers at 2 channels
    "t256": {"img_resolution": 256, "channel_base": 512, "channel_max": 8, **FP32},
    "t32-cond": {"img_resolution": 32, "c_dim": 3, **T_CONFIG, **FP32},
}


def make_transform(translate: tuple[float, float], angle: float) -> np.ndarray:
    """The 3×3 forward rotation+translation, as NVIDIA's gen_images.py builds it (float64)."""
    m = np.eye(3)
    s, c = np.sin(angle / 360.0 * np.pi * 2), np.cos(angle / 360.0 * np.pi * 2)
    m[0][0], m[0][1], m[0][2] = c, s, translate[0]
    m[1][0], m[1][1], m[1][2] = -s, c, translate[1]
    return m


def build_generator(case: str, seed: int):
    import dnnlib  # NVIDIA's
    from training.networks_stylegan3 import Generator

    kwargs = dict(CASE_KWARGS[case])
    c_dim, resolution = kwargs.pop("c_dim", 0), kwargs.pop("img_resolution")
    # the kwargs train.py + training_loop.py pass: G_kwargs (an EasyDict) then common_kwargs
    g_kwargs = dnnlib.EasyDict(z_dim=Z_DIM, w_dim=W_DIM, mapping_kwargs=dnnlib.EasyDict(num_layers=2), **kwargs,
                               magnitude_ema_beta=MAGNITUDE_EMA_BETA)
    torch.manual_seed(seed)
    G = Generator(**g_kwargs, c_dim=c_dim, img_resolution=resolution, img_channels=3)
    return G.train().requires_grad_(False)


def sample_c(G, count: int, generator: torch.Generator) -> torch.Tensor | None:
    if G.c_dim == 0:
        return None
    labels = torch.randint(G.c_dim, (count,), generator=generator)
    return torch.nn.functional.one_hot(labels, G.c_dim).float()


def make_realistic(G, seed: int) -> None:
    """Weights as after training: w moves the input's rotation/translation, small biases, EMAs settled."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # a trained input affine turns w into rotation (t0, t1) and translation (t2, t3), init zero: scale
        # 0.15 gives rotations of a few degrees and translations of about 0.1, as in released nets
        G.synthesis.input.affine.weight.copy_(0.15 * torch.randn(G.synthesis.input.affine.weight.shape, generator=gen))
        G.synthesis.input.affine.bias.add_(0.05 * torch.randn(4, generator=gen))
        for name, module in G.synthesis.named_children():
            if name.startswith("L"):
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
                module.affine.bias.add_(0.1 * torch.randn(module.affine.bias.shape, generator=gen))
        for name, module in G.mapping.named_children():
            # stored bias × bias_gain (the lr multiplier) is the effective bias: keep that about 0.1
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen) / module.bias_gain)
        layers = [m for n, m in G.synthesis.named_children() if n.startswith("L")]
        # magnitude EMAs: one pass with beta 0 sets each layer from its (already normalised) input,
        # a few passes with beta 0.5 average over batches; then train.py's beta is put back
        batch = 32 if G.img_resolution <= 64 else 8  # 256-px passes are slow on CPU
        for beta, passes in ((0.0, 1), (0.5, 4)):
            for layer in layers:
                layer.magnitude_ema_beta = beta
            for _ in range(passes):
                z = torch.randn(batch, G.z_dim, generator=gen)
                G(z, sample_c(G, batch, gen), update_emas=True)
        for layer in layers:
            layer.magnitude_ema_beta = MAGNITUDE_EMA_BETA
        # a trained ToRGB gives images of about unit range: scale its weight to an image std of 0.5
        z = torch.randn(batch, G.z_dim, generator=gen)
        torgb = layers[-1]
        torgb.weight.mul_(0.5 / float(G(z, sample_c(G, batch, gen)).std()))
        # w_avg: the mean of w over many z (what its EMA converges to), through NVIDIA's own update
        w_avg_beta = G.mapping.w_avg_beta
        G.mapping.w_avg_beta = 0.0
        G.mapping(torch.randn(4096, G.z_dim, generator=gen), sample_c(G, 4096, gen), update_emas=True)
        G.mapping.w_avg_beta = w_avg_beta


def reference_outputs(G, z: torch.Tensor, c: torch.Tensor | None, transform: torch.Tensor, small: bool) -> dict:
    """NVIDIA's mapping and images for z (and c); ψ and transformed images only for ``small`` networks."""
    with torch.no_grad():
        outputs = {"ws": G.mapping(z, c), "ws_psi": G.mapping(z, c, truncation_psi=PSI, truncation_cutoff=CUTOFF)}
        outputs["images"] = G(z, c, noise_mode="const")
        if not torch.equal(G.synthesis(outputs["ws"]), outputs["images"]):
            raise SystemExit("G(z) differs from G.synthesis(G.mapping(z))")
        if not small:  # file size: one 256-px image only (ψ and the transform are covered at 32 px)
            return outputs
        outputs["images_psi"] = G(z, c, truncation_psi=PSI, truncation_cutoff=CUTOFF, noise_mode="const")
        G.synthesis.input.transform.copy_(transform)  # exactly as gen_images.py sets it
        outputs["images_transformed"] = G(z, c, noise_mode="const")
        G.synthesis.input.transform.copy_(torch.eye(3))
    return outputs


def run_case(case: str, commit: str) -> dict:
    seed = zlib.crc32(case.encode()) % 100_000
    G = build_generator(case, seed)
    make_realistic(G, seed)
    G = copy.deepcopy(G).eval().requires_grad_(False)  # what training_loop.py snapshots as G_ema

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{case}.pkl"
        with open(path, "wb") as f:
            pickle.dump(dict(G_ema=G), f)  # NVIDIA's persistence reduces every module; default protocol
        data = path.read_bytes()
    unpickled = restricted_load(data, name=f"{case}.pkl")
    layout = record_layout(unpickled["G_ema"], snapshot_keys=list(unpickled))
    weights = {k: v.detach().clone().float() for k, v in G.state_dict().items()}
    recorded = record_state_dict(unpickled["G_ema"])
    if set(recorded) != set(weights) or not all(torch.equal(recorded[k], weights[k]) for k in weights):
        raise SystemExit(f"{case}: the unpickled tensors differ from NVIDIA's state dict")

    small = G.img_resolution <= 64
    batch = 2 if small else 1
    z = torch.from_numpy(np.random.RandomState(seed).randn(batch, G.z_dim)).float()
    c = sample_c(G, batch, torch.Generator().manual_seed(seed + 2))
    transform = torch.from_numpy(np.linalg.inv(make_transform(TRANSLATE, ROTATE))).float()
    outputs = reference_outputs(G, z, c, transform, small)

    tensors = {**weights, "inputs.z": z, "inputs.transform": transform.contiguous(),
               **{f"outputs.{k}": v.contiguous() for k, v in outputs.items()}}
    if c is not None:
        tensors["inputs.c"] = c
    REFERENCE_DIR.mkdir(exist_ok=True)
    save_file(tensors, str(REFERENCE_DIR / f"{case}.safetensors"))
    images = outputs["images"]
    meta = {
        "case": case,
        "nvidia_commit": commit,
        "nvidia_repository": "https://github.com/NVlabs/stylegan3",
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "seed": seed,
        "config": CASE_KWARGS[case],
        "notes": ("NVIDIA's forward on CPU in float32: use_fp16 layers compute in float32 off CUDA; conv_clamp "
                  "applies; noise_mode is accepted and ignored (StyleGAN3 has no noise inputs)."),
        "inputs": {"psi": PSI, "cutoff": CUTOFF, "translate": list(TRANSLATE), "rotate": ROTATE,
                   "transform": transform.tolist(), "c": None if c is None else c.tolist(), "z_seed": seed,
                   "z": f"numpy.random.RandomState(z_seed).randn({batch}, z_dim) as float32",
                   "noise_mode": "const"},
        "outputs": {k: list(v.shape) for k, v in outputs.items()},
        "image_range": [float(images.min()), float(images.max())],
        "magnitude_ema": {n: float(m.magnitude_ema) for n, m in G.synthesis.named_children() if n.startswith("L")},
        "layout": layout,
    }
    (REFERENCE_DIR / f"{case}.json").write_text(format_json(meta))
    return meta


def format_json(meta: dict) -> str:
    """Indented, except one line per layout module (the layout is most of the file)."""
    modules = ",\n".join(json.dumps(m, separators=(",", ":")) for m in meta["layout"]["modules"])
    layout = f'{{"snapshot_keys": {json.dumps(meta["layout"]["snapshot_keys"])}, "modules": [\n{modules}\n]}}'
    text = json.dumps({**meta, "layout": "LAYOUT"}, indent=1)
    return text.replace('"layout": "LAYOUT"', f'"layout": {layout}') + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvlabs", type=Path, required=True, help="an extracted NVlabs/stylegan3 tree")
    parser.add_argument("--shim", type=Path, default=Path("/tmp/nvlabs-shim"), help="folder with a pkg_resources shim")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    sys.path[:0] = [str(args.shim), str(args.nvlabs)]
    commit = subprocess.run(["git", f"--git-dir={MIRROR}", "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    try:  # check our make_transform against NVIDIA's where its gen_images imports
        import gen_images
        if not np.array_equal(gen_images.make_transform(TRANSLATE, ROTATE), make_transform(TRANSLATE, ROTATE)):
            raise SystemExit("make_transform differs from gen_images.make_transform")
    except ImportError as error:
        print(f"(gen_images not importable: {error}; make_transform unchecked)")
    torch.set_num_threads(1)
    for case in args.cases:
        meta = run_case(case, commit)
        size = sum((REFERENCE_DIR / f"{case}.{ext}").stat().st_size for ext in ("safetensors", "json"))
        print(f"{case}: {len(meta['layout']['modules'])} modules, images in {meta['image_range']}, {size / 1e3:.0f} kB")
    total = sum(p.stat().st_size for p in REFERENCE_DIR.iterdir())
    print(f"reference/: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
