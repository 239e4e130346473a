"""StyleGAN2 generator maths, written for this project (fp32, inference; parameter names as NVlabs').

Follows the computation of NVlabs' stylegan2-ada-pytorch / stylegan3 ``networks_stylegan2``: mapping
(2nd-moment normalisation, equalised-lr FC layers with lr multiplier, leaky ReLU × √2), truncation
towards ``w_avg`` with an optional cutoff, and synthesis blocks of modulated, demodulated 3×3
convolutions (the up-sampling one as a stride-2 transposed convolution followed by the [1, 3, 3, 1]
FIR filter), noise, bias, leaky ReLU × √2 and clamping, with skip or resnet architecture.

Every FIR filter runs as one depthwise (transposed) convolution, never a Python loop over pixels.

Shapes: ``z [N, z_dim]``, ``c [N, c_dim]`` one-hot, ``ws [N, num_ws, w_dim]``, images
``[N, img_channels, R, R]`` in about [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)
NOISE_MODES = ("const", "random", "none")


@dataclass
class StyleGAN2Config:
    """Sizes and options of a StyleGAN2 generator (loaders infer sizes from tensor shapes)."""

    z_dim: int
    w_dim: int
    c_dim: int
    img_resolution: int
    img_channels: int
    channels: dict[int, int]                # block resolution → channels
    mapping_layers: int
    architecture: str = "skip"              # "skip" or "resnet"
    conv_clamp: float | None = None
    mapping_lr: float = 0.01
    embed_features: int | None = None       # class-embedding width (defaults to w_dim)
    mapping_features: int | None = None     # width of the hidden mapping layers (defaults to w_dim)
    use_noise: bool = True                  # False: the synthesis layers have no noise inputs at all

    @property
    def resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        return 2 * int(math.log2(self.img_resolution)) - 2


def parameter_count(config: StyleGAN2Config) -> int:
    """Elements of ``StyleGAN2Generator(config).state_dict()``, computed from ``config`` — nothing is built.

    Loaders compare it with what a file really stores before building the network: a few stored bytes
    can describe, through their shapes alone, a network of gigabytes. It mirrors the classes below
    (tests compare it with the real state dict on several configurations).
    """
    def dense(inputs: int, outputs: int) -> int:
        return inputs * outputs + outputs

    def layer(inputs: int, outputs: int, resolution: int) -> int:  # affine, 3×3 weight, bias, noise
        return dense(config.w_dim, inputs) + outputs * inputs * 9 + outputs + (
            1 + resolution * resolution if config.use_noise else 0)

    embed = config.embed_features or config.w_dim
    hidden = config.mapping_features or config.w_dim
    widths = ([config.z_dim + (embed if config.c_dim else 0)] + [hidden] * (config.mapping_layers - 1)
              + [config.w_dim])
    total = (dense(config.c_dim, embed) if config.c_dim else 0) + config.w_dim  # embedding, w_avg
    total += sum(dense(widths[i], widths[i + 1]) for i in range(config.mapping_layers))
    for resolution in config.resolutions:
        outputs = config.channels[resolution]
        if resolution == 4:
            total += outputs * 16
        else:
            inputs = config.channels[resolution // 2]
            total += layer(inputs, outputs, resolution)
            total += inputs * outputs if config.architecture == "resnet" else 0
        total += layer(outputs, outputs, resolution)
        if resolution == config.img_resolution or config.architecture == "skip":
            total += dense(config.w_dim, outputs) + config.img_channels * outputs + config.img_channels
    return total


def _fir_kernel(channels: int, gain: float, device=None) -> torch.Tensor:
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device)
    kernel = torch.outer(taps, taps)
    kernel = kernel / kernel.sum() * gain
    return kernel.expand(channels, 1, 4, 4).contiguous()


def fir(x: torch.Tensor, padding: tuple[int, int, int, int], gain: float) -> torch.Tensor:
    """Pad ``(left, right, top, bottom)`` then filter with the normalised [1, 3, 3, 1]² FIR × gain."""
    x = F.pad(x, padding)
    return F.conv2d(x, _fir_kernel(x.shape[1], gain, x.device).to(x.dtype), groups=x.shape[1])


def upsample2d(x: torch.Tensor) -> torch.Tensor:
    """NVlabs ``upfirdn2d.upsample2d`` with the default filter: zero-insertion ×2, pad (2, 1), FIR × 4.

    Computed as one depthwise stride-2 transposed convolution (the filter is symmetric, and cropping 1
    pixel on each side of its ``2H + 2`` output gives the same alignment), so the zeros are never made.
    """
    return F.conv_transpose2d(x, _fir_kernel(x.shape[1], 4.0, x.device).to(x.dtype), stride=2, padding=1,
                              groups=x.shape[1])


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, *, lrelu: bool, gain: float = 1.0,
             clamp: float | None = None, inplace: bool = False) -> torch.Tensor:
    """Add a per-channel bias, leaky ReLU (0.2) × √2 when ``lrelu``, × ``gain``, clamp to ±``clamp``.

    ``inplace`` overwrites ``x`` (callers pass it for their own intermediate tensors when autograd does
    not need them: on CPUs a fresh large tensor costs more, in page faults, than the arithmetic)."""
    if not inplace:
        if bias is not None:
            x = x + bias.reshape(1, -1, *([1] * (x.dim() - 2)))
        if lrelu:
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        if gain != 1:
            x = x * gain
        return x.clamp(-clamp, clamp) if clamp is not None else x
    if bias is not None:
        x.add_(bias.reshape(1, -1, *([1] * (x.dim() - 2))))
    scale = (LRELU_GAIN if lrelu else 1.0) * gain
    if lrelu:
        F.leaky_relu_(x, 0.2)
    if scale != 1:
        x.mul_(scale)
    return x.clamp_(-clamp, clamp) if clamp is not None else x


class FullyConnected(nn.Module):
    """Equalised-learning-rate linear layer: ``weight × lr/√in``, ``bias × lr``."""

    def __init__(self, in_features: int, out_features: int, *, lrelu: bool = False, lr_multiplier: float = 1.0,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.lrelu = lrelu
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ (self.weight * self.weight_gain).T
        return bias_act(x, self.bias * self.bias_gain, lrelu=self.lrelu)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (and class) → w, repeated to ``num_ws`` rows; ``w_avg`` is never updated here."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        embed = config.embed_features or config.w_dim
        if config.c_dim:
            self.embed = FullyConnected(config.c_dim, embed)
        hidden = config.mapping_features or config.w_dim
        widths = ([config.z_dim + (embed if config.c_dim else 0)] + [hidden] * (config.mapping_layers - 1)
                  + [config.w_dim])
        for i in range(config.mapping_layers):
            setattr(self, f"fc{i}", FullyConnected(widths[i], widths[i + 1], lrelu=True,
                                                   lr_multiplier=config.mapping_lr))
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        x = normalize_2nd_moment(z) if self.config.z_dim else None
        if self.config.c_dim:
            y = normalize_2nd_moment(self.embed(c))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.config.mapping_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x.unsqueeze(1).repeat(1, self.config.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.config.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = torch.cat([self.w_avg.lerp(ws[:, :cutoff], truncation_psi), ws[:, cutoff:]], dim=1)
        return ws


def modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool,
                   up: bool = False) -> torch.Tensor:
    """Modulated (and demodulated) conv. ``x [N, I, H, W]``, ``weight [O, I, k, k]``, ``styles [N, I]``.

    Computed as NVlabs' non-fused form: scale the input channels by the styles, convolve with the
    shared weight, scale the output channels by the demodulation coefficients. It equals modulating
    the weight per sample (the fused form) up to float rounding, and on CPUs it is much faster for
    batches > 1 than one grouped convolution with a group per sample (and, measured at 256 and
    1024 px, batch 4, than fused samples one after another). A single sample without autograd runs
    fused (:func:`_fused_modulated_conv`), saving two passes over the activations.
    """
    n = x.shape[0]
    if n == 1 and not torch.is_grad_enabled():  # fused: one pass over the activations instead of three
        return _fused_modulated_conv(x, weight, styles, demodulate=demodulate, up=up)
    x = x * styles.reshape(n, -1, 1, 1)
    if up:
        # stride-2 transposed conv (weight not flipped), then the FIR filter with padding 1 and gain 4
        x = fir(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2), (1, 1, 1, 1), gain=4.0)
    else:
        x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if demodulate:
        # Σ_{i,k} (w_oik s_i)² = Σ_i s_i² Σ_k w_oik²: one [N, I] × [I, O] product, no per-sample weights
        coefficients = (styles.square() @ weight.square().sum(dim=[2, 3]).T + 1e-8).rsqrt()
        x = x * coefficients.reshape(n, -1, 1, 1)
    return x


def _fused_modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool,
                          up: bool) -> torch.Tensor:
    """:func:`modulated_conv` for one sample without autograd: the styles and demodulation go into the
    ``[O, I, k, k]`` weight (cheap) instead of two passes over the activations (NVlabs' fused form).
    The weight is written in the input's memory format, so the convolution does not convert it."""
    scale = styles.reshape(1, -1, 1, 1)
    if demodulate:
        coefficients = (styles.square() @ weight.square().sum(dim=[2, 3]).T + 1e-8).rsqrt()
        scale = scale * coefficients.reshape(-1, 1, 1, 1)
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    w = torch.mul(weight, scale, out=torch.empty_like(weight, memory_format=layout))
    if up:
        return fir(F.conv_transpose2d(x, w.transpose(0, 1), stride=2), (1, 1, 1, 1), gain=4.0)
    return F.conv2d(x, w, padding=weight.shape[-1] // 2)


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (optionally up-sampling) + noise + bias + leaky ReLU (+ clamp)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool,
                 conv_clamp: float | None, use_noise: bool = True) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.use_noise = use_noise
        if use_noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.up = up
        self.conv_clamp = conv_clamp
        self.resolution = resolution

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str, gain: float = 1.0,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """``noise`` ``[N, 1, R, R]`` (or ``[R, R]``), when given, replaces the ``noise_mode`` noise (inversion
        optimises it); ignored by layers without noise inputs."""
        x = modulated_conv(x, self.weight, self.affine(w), demodulate=True, up=self.up)
        inplace = not x.requires_grad  # x is this layer's own fresh tensor
        if self.use_noise and noise is not None:
            x = x + noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            x = x.add_(self.noise_const * self.noise_strength) if inplace else x + self.noise_const * self.noise_strength
        elif self.use_noise and noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device) * self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, lrelu=True, gain=gain, clamp=clamp, inplace=inplace)


class ToRGB(nn.Module):
    """Modulated 1×1 conv without demodulation, bias, linear, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(x, self.bias, lrelu=False, clamp=self.conv_clamp, inplace=not x.requires_grad)


class SkipConv(nn.Module):
    """The resnet architecture's shortcut: FIR up-sampling then a 1×1 conv, gain √½, no bias, no clamp."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(upsample2d(x), self.weight * self.weight_gain) * math.sqrt(0.5)


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) → conv1 → (ToRGB when skip or last)."""

    def __init__(self, config: StyleGAN2Config, resolution: int) -> None:
        super().__init__()
        out_channels = config.channels[resolution]
        self.resolution = resolution
        self.first = resolution == 4
        self.last = resolution == config.img_resolution
        self.architecture = config.architecture
        self.conv_clamp = config.conv_clamp
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            in_channels = config.channels[resolution // 2]
            self.conv0 = SynthesisLayer(in_channels, out_channels, config.w_dim, resolution, up=True,
                                        conv_clamp=config.conv_clamp, use_noise=config.use_noise)
            if config.architecture == "resnet":
                self.skip = SkipConv(in_channels, out_channels)
        self.conv1 = SynthesisLayer(out_channels, out_channels, config.w_dim, resolution, up=False,
                                    conv_clamp=config.conv_clamp, use_noise=config.use_noise)
        self.has_torgb = self.last or config.architecture == "skip"
        if self.has_torgb:
            self.torgb = ToRGB(out_channels, config.img_channels, config.w_dim, config.conv_clamp)

    @property
    def num_conv(self) -> int:
        return 1 if self.first else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str, noise: list[torch.Tensor | None] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``ws [N, num_conv + has_torgb, w_dim]``; ``noise``: one map (or None) per conv, in order."""
        first, second = (None, None) if noise is None else ((None, noise[0]) if self.first else tuple(noise))
        if self.first:
            # channels-last from the start: CPU convolutions (the FIR's depthwise ones most) run faster in it
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).contiguous(memory_format=torch.channels_last)
            x = self.conv1(x, ws[:, 0], noise_mode, noise=second)
        elif self.architecture == "resnet":
            shortcut = self.skip(x)
            x = self.conv0(x, ws[:, 0], noise_mode, noise=first)
            x = shortcut + self.conv1(x, ws[:, 1], noise_mode, gain=math.sqrt(0.5), noise=second)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, noise=first)
            x = self.conv1(x, ws[:, 1], noise_mode, noise=second)
        if img is not None:
            img = upsample2d(img)
        if self.has_torgb:
            rgb = self.torgb(x, ws[:, self.num_conv])
            img = rgb if img is None else img + rgb
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        for resolution in config.resolutions:
            setattr(self, f"b{resolution}", SynthesisBlock(config, resolution))

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{r}") for r in self.config.resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const",
                noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``noise``: explicit maps ``[N, 1, R, R]``, one per :meth:`conv_layers` entry, replacing
        ``noise_mode``'s (inversion optimises them; maps of layers without noise inputs are ignored)."""
        x = img = None
        index = layer = 0
        for block in self.blocks():
            maps = list(noise[layer:layer + block.num_conv]) if noise else None  # [] (no noise inputs): None
            x, img = block(x, img, ws[:, index:index + block.num_conv + int(block.has_torgb)], noise_mode, maps)
            index += block.num_conv
            layer += block.num_conv
        return img.contiguous()

    def conv_layers(self) -> list[SynthesisLayer]:
        """Every synthesis conv in order (the first block's one conv, then conv0, conv1 of each block):
        the layers explicit noise maps are given for."""
        layers: list[SynthesisLayer] = []
        for block in self.blocks():
            layers += [block.conv1] if block.first else [block.conv0, block.conv1]
        return layers

    def style_layers(self) -> list[nn.Module]:
        """The layer whose affine consumes each W+ slot: convs in order, then the last ToRGB (SeFa's choice)."""
        layers: list[nn.Module] = []
        for block in self.blocks():
            layers += [block.conv1] if block.first else [block.conv0, block.conv1]
        return layers + [self.blocks()[-1].torgb]


class StyleGAN2Generator(nn.Module):
    """``mapping`` + ``synthesis`` with NVlabs parameter names (``mapping.fc0.weight``, ``synthesis.b4.const`` …)."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config)
        self.synthesis = SynthesisNetwork(config)
