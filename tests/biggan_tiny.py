"""Write BigGAN-deep directories (config.json + pytorch_model.bin) with random weights, built with the
package's own classes — for tests (a tiny config) and benchmarks (the released architectures).

Two traps of random BigGAN weights are handled: every spectral-norm ``weight_u`` / ``weight_v`` is set
to the top singular vectors of its ``weight_orig`` (otherwise σ is arbitrary and attention overflows to
NaN in eval), and the final unconditional batch norm's ``weight`` / ``bias`` (created uninitialised)
are filled.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY = dict(output_dim=32, z_dim=16, class_embed_dim=16, channel_width=4, num_classes=10,
            layers=[(False, 16, 16), (True, 16, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 1)],
            attention_layer_position=3)


def released_config(resolution: int) -> dict:
    """The architecture of biggan-deep-128/256/512 as the package's converter defines it."""
    from pytorch_pretrained_biggan import convert_tf_to_pytorch as presets

    config = {128: presets.BigGAN128, 256: presets.BigGAN256, 512: presets.BigGAN512}[resolution]
    return {k: v for k, v in config.__dict__.items()}


def random_biggan(config: dict, seed: int = 0):
    """A ``BigGAN`` with seeded random weights that render finite, varied images in eval mode."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig
    from torch.nn.utils.spectral_norm import SpectralNorm

    torch.manual_seed(seed)
    model = BigGAN(BigGANConfig(**config))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, SpectralNorm):
                    matrix = getattr(module, "weight_orig").reshape(getattr(module, "weight_orig").shape[0], -1)
                    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
                    getattr(module, "weight_u").copy_(u[:, 0])
                    getattr(module, "weight_v").copy_(vh[0])
            if type(module).__name__ == "BigGANBatchNorm":
                module.running_means.copy_(0.1 * torch.randn(module.running_means.shape, generator=generator))
                module.running_vars.copy_(0.5 + torch.rand(module.running_vars.shape, generator=generator))
        model.generator.bn.weight.copy_(1 + 0.1 * torch.randn(model.generator.bn.weight.shape, generator=generator))
        model.generator.bn.bias.copy_(0.1 * torch.randn(model.generator.bn.bias.shape, generator=generator))
        for module in model.modules():
            if type(module).__name__ == "SelfAttn":
                module.gamma.fill_(0.5)  # exercise the attention path (it starts at zero)
    return model.eval()


def write_biggan_dir(directory: str | Path, config: dict | None = None, seed: int = 0) -> Path:
    """Save ``random_biggan(config)`` as ``directory/{config.json, pytorch_model.bin}``."""
    from pytorch_pretrained_biggan import BigGANConfig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = dict(config or TINY)
    model = random_biggan(config, seed)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    (directory / "config.json").write_text(BigGANConfig(**config).to_json_string())
    return directory
