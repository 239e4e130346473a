"""The CPU-speed paths of the StyleGAN2/3 networks give the same images as the plain ones.

The StyleGAN3 network synthesises large networks sample by sample (``PER_SAMPLE_ELEMENTS``), fuses the
modulation into the weights, runs channels-last and overwrites its own intermediates when autograd
does not need them; StyleGAN2 fuses the modulation for single samples without autograd and works in
place and channels-last likewise. Each path is checked here against NVIDIA's recorded outputs or the
batched / autograd path on real fixtures.
"""

from __future__ import annotations

import pytest
import torch

import latentdirs
from latentdirs.generators.stylegan3 import network as sg3
from tests.stylegan2_fixtures import random_network, tiny_config, write_nvlabs_pickle
from tests.stylegan3_fixtures import REFERENCE_DIR, load_reference, write_stylegan3_pickle

TOLERANCE = 1e-4


def _stylegan3(case: str, tmp_path):
    if not (REFERENCE_DIR / f"{case}.safetensors").is_file():
        pytest.skip(f"reference case {case} not generated")
    reference = load_reference(case)
    path = write_stylegan3_pickle(reference, tmp_path / f"{case}.pkl")
    return reference, latentdirs.load_generator(f"stylegan3:{path}", device="cpu")


@pytest.mark.parametrize("case", ["t32-fp16", "r32"])
def test_stylegan3_per_sample_path_matches_nvidia(case, tmp_path, monkeypatch):
    reference, generator = _stylegan3(case, tmp_path)
    ws = reference.outputs["ws"]
    with torch.no_grad():
        batched = generator.network.synthesis(ws)
        monkeypatch.setattr(sg3, "PER_SAMPLE_ELEMENTS", 0)  # every network now runs sample by sample
        per_sample = generator.network.synthesis(ws)
    assert ws.shape[0] > 1
    assert per_sample.is_contiguous() and batched.is_contiguous()
    assert (per_sample - reference.outputs["images"]).abs().max() < TOLERANCE
    assert (per_sample - batched).abs().max() < 1e-5  # float32 rounding of batched vs single products


def test_stylegan3_autograd_path_matches_and_has_gradients(tmp_path):
    reference, generator = _stylegan3("t32-fp16", tmp_path)
    ws = reference.outputs["ws"].clone().requires_grad_(True)
    images = generator.network.synthesis(ws)  # out-of-place path: autograd keeps its inputs
    assert (images.detach() - reference.outputs["images"]).abs().max() < TOLERANCE
    images.square().sum().backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all() and ws.grad.abs().max() > 0
    with torch.inference_mode():  # in-place path
        assert (generator.network.synthesis(reference.outputs["ws"]) - images.detach()).abs().max() < 1e-5


@pytest.mark.parametrize("changes", [{}, {"architecture": "resnet", "conv_clamp": 0.5}])
def test_stylegan2_fused_single_sample_equals_batched(changes, tmp_path):
    network = random_network(tiny_config(**changes), seed=5)
    generator = latentdirs.load_generator(f"stylegan2:{write_nvlabs_pickle(network, tmp_path / 'n.pkl')}",
                                          device="cpu")
    z = generator.sample(3, seed=2)
    with torch.no_grad():
        ws = generator.network.mapping(z, None)
        batched = generator.network.synthesis(ws, noise_mode="const")           # non-fused (batch 3)
        singles = torch.cat([generator.network.synthesis(ws[i:i + 1], noise_mode="const")  # fused
                             for i in range(3)])
    assert batched.abs().max() > 0.1 and batched.is_contiguous()
    assert (singles - batched).abs().max() < 1e-5
    ws_grad = ws.clone().requires_grad_(True)
    with_grad = generator.network.synthesis(ws_grad, noise_mode="const")         # autograd, out of place
    with_grad.sum().backward()
    assert (with_grad.detach() - batched).abs().max() < 1e-5 and ws_grad.grad.abs().max() > 0
