"""StyleGAN3 (config-T and config-R) synthesis, written for this project (fp32, inference).

Follows the computation of NVlabs' stylegan3 ``training/networks_stylegan3.py`` with its parameter and
buffer names (``synthesis.input.freqs``, ``synthesis.L3_36_512.up_filter`` …), so a G_ema state dict
loads 1:1:

* the mapping z (+ class) → w is StyleGAN2's, reused from :mod:`..stylegan2.network` (the same
  computation: 2nd-moment normalisation, equalised-lr layers, truncation towards ``w_avg``);
* ``input`` renders Fourier features on a grid whose rotation and translation come from an affine of
  W+ slot 0, composed with a user transform ``[3, 3]``;
* each layer ``L{i}_{size}_{channels}`` is a modulated convolution (1×1 without demodulation for the
  final ToRGB) followed by *filtered leaky ReLU*: bias, up-sampling by ``up_factor`` with ``up_filter``,
  leaky ReLU × √2 and clamp, low-pass with ``down_filter`` and down-sampling by ``down_factor``.

Filters are weights read from the file (1-D separable Kaiser filters, or 2-D radial ones for
config-R's non-critically-sampled layers), never re-designed here.

Written for CPU speed: up-sampling is a depthwise strided *transposed* convolution (no zero-inserted
tensor is ever made), down-sampling a depthwise *strided* convolution (no full-resolution output is
computed and thrown away), separable filters run as two 1-D passes, radial ones as one 2-D pass;
activations are channels-last (CPU depthwise convolutions run 2-4× faster so than in NCHW); the
modulation, demodulation and bias go into each sample's convolution (see :func:`modulated_conv`);
the leaky ReLU's gain is folded into the up-sampling taps; and, where autograd does not need them,
activation and clamp overwrite the layer's own tensors (a fresh large tensor costs more in page
faults than the arithmetic on it). Measured against NVIDIA's code: benchmarks/bench_stylegan3.py.

Deviations from NVIDIA's code, each below float32 rounding in the outputs: (1) the styles'
pre-normalisation uses each sample's own mean square instead of the whole batch's (it cancels
exactly under demodulation except inside the 1e-8 epsilon, and keeps a sample's image independent of
its batch); (2) float32 everywhere — NVIDIA runs fp16 layers on CUDA only, so on CPU it computes in
float32 as well; (3) no noise inputs: StyleGAN3 has none, so there is no ``noise_mode``.

Shapes: ``z [N, z_dim]``, ``c [N, c_dim]`` one-hot, ``ws [N, num_ws, w_dim]`` (``num_ws`` = layers + 1:
slot 0 feeds the input's affine, slot ``i`` layer ``i - 1``), images ``[N, img_channels, R, R]`` in
about [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentdirs.generators.stylegan2.network import FullyConnected, MappingNetwork

LRELU_GAIN = math.sqrt(2.0)
LRELU_SLOPE = 0.2
#: networks whose largest per-sample activation has at least this many elements synthesise sample by
#: sample (Python's per-layer overhead is then negligible; small test networks keep whole batches)
PER_SAMPLE_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer as NVIDIA's module attributes describe it (sizes are square sides).

    ``padding`` is ``(x_lo, x_hi, y_lo, y_hi)`` applied around the up-sampled signal; ``up_filter`` /
    ``down_filter`` are the buffers' shapes — ``()`` for none (NVIDIA stores ``None`` when a factor
    is 1), ``(K,)`` for a separable filter, ``(K, K)`` for a 2-D (radial) one.
    """

    name: str
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    up_factor: int
    down_factor: int
    padding: tuple[int, int, int, int]
    conv_kernel: int
    is_torgb: bool
    up_filter: tuple[int, ...]
    down_filter: tuple[int, ...]
    conv_clamp: float | None = None
    use_fp16: bool = False                 # as trained; recorded only (float32 here, as NVIDIA on CPU)

    @property
    def radial(self) -> bool:
        return len(self.down_filter) == 2 or len(self.up_filter) == 2

    @property
    def conv_size(self) -> int:
        """Side after the modulated convolution (NVIDIA pads by ``kernel - 1``: a "full" convolution)."""
        return self.in_size + self.conv_kernel - 1

    @property
    def upsampled_size(self) -> tuple[int, int]:
        """(width, height) of the up-sampled, padded and filtered signal the leaky ReLU runs on."""
        taps = self.up_filter[-1] if self.up_filter else 1
        x0, x1, y0, y1 = self.padding
        return (self.conv_size * self.up_factor + x0 + x1 - taps + 1,
                self.conv_size * self.up_factor + y0 + y1 - taps + 1)

    @property
    def computed_out_size(self) -> tuple[int, int]:
        """(width, height) the layer's arithmetic produces (loaders check it equals ``out_size``)."""
        taps = self.down_filter[-1] if self.down_filter else 1
        return tuple((side - taps) // self.down_factor + 1 for side in self.upsampled_size)


@dataclass(frozen=True)
class InputSpec:
    """The Fourier-feature input: ``channels`` features on a ``size``² grid, ``sampling_rate`` samples per
    unit (one unit = the image's width), frequencies within ``bandwidth``."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclass(frozen=True)
class StyleGAN3Config:
    """Everything that decides a StyleGAN3 generator's shapes and arithmetic (loaders read it from the
    file's module attributes, cross-checked against its tensor shapes)."""

    z_dim: int
    w_dim: int
    c_dim: int
    img_resolution: int
    img_channels: int
    input: InputSpec
    layers: tuple[LayerSpec, ...]
    output_scale: float = 0.25
    mapping_layers: int = 2
    mapping_lr: float = 0.01

    @property
    def num_ws(self) -> int:
        return len(self.layers) + 1

    @property
    def variant(self) -> str:
        """``"stylegan3-r"`` (1×1 convolutions or radial filters) or ``"stylegan3-t"``."""
        convs = [layer for layer in self.layers if not layer.is_torgb]
        rotation = any(layer.radial for layer in self.layers) or any(layer.conv_kernel == 1 for layer in convs)
        return "stylegan3-r" if rotation else "stylegan3-t"

    @property
    def conv_clamp(self) -> float | None:
        """The layers' clamp (NVIDIA sets one value for all; the first non-None one if they differ)."""
        return next((layer.conv_clamp for layer in self.layers if layer.conv_clamp is not None), None)

    @property
    def mapping(self) -> "MappingConfig":
        return MappingConfig(z_dim=self.z_dim, w_dim=self.w_dim, c_dim=self.c_dim, num_ws=self.num_ws,
                             mapping_layers=self.mapping_layers, mapping_lr=self.mapping_lr)


@dataclass(frozen=True)
class MappingConfig:
    """What StyleGAN2's :class:`~..stylegan2.network.MappingNetwork` reads from its config: StyleGAN3's
    mapping is the same network with the class embedding and hidden layers ``w_dim`` wide."""

    z_dim: int
    w_dim: int
    c_dim: int
    num_ws: int
    mapping_layers: int
    mapping_lr: float
    embed_features: int | None = None
    mapping_features: int | None = None


def parameter_count(config: StyleGAN3Config) -> int:
    """Elements of ``StyleGAN3Generator(config).state_dict()``, computed without building anything
    (loaders compare it with what the file stores; tests compare it with the real state dict)."""
    w = config.w_dim
    total = w + sum(inputs * w + w for inputs in [config.z_dim + (w if config.c_dim else 0)]
                    + [w] * (config.mapping_layers - 1))
    total += config.c_dim * w + w if config.c_dim else 0
    channels = config.input.channels
    total += channels * channels + 4 * w + 4 + 9 + 3 * channels  # weight, affine, transform, freqs, phases
    for layer in config.layers:
        total += layer.in_channels * w + layer.in_channels + layer.out_channels * layer.in_channels * (
            layer.conv_kernel ** 2) + layer.out_channels + 1
        total += math.prod(layer.up_filter) if layer.up_filter else 0
        total += math.prod(layer.down_filter) if layer.down_filter else 0
    return total


def activation_elements(config: StyleGAN3Config) -> int:
    """Largest per-sample activation (elements) a forward pass holds: the up-sampled signal of the
    widest layer. Loaders bound it, so a file cannot ask a render for terabytes."""
    sizes = [config.input.channels * config.input.size ** 2]
    for layer in config.layers:
        width, height = layer.upsampled_size
        sizes.append(layer.out_channels * max(width, 1) * max(height, 1))
    return max(sizes)


# ---------------------------------------------------------------------- filtering
def _crop_or_pad(x: torch.Tensor, dim: int, low: int, high: int) -> torch.Tensor:
    """Add ``low`` / ``high`` zeros before / after ``dim`` (negative amounts crop instead)."""
    start, stop = max(-low, 0), x.shape[dim] - max(-high, 0)
    x = x.narrow(dim, start, stop - start)
    if low > 0 or high > 0:
        pad = (max(low, 0), max(high, 0))
        x = F.pad(x, pad if dim in (-1, 3) else (0, 0) + pad)
    return x


def _transposed_pass(x: torch.Tensor, row: torch.Tensor, factor: int, dim: int, low: int, high: int) -> torch.Tensor:
    """One separable up-sampling pass along ``dim`` (3: x, 2: y): a stride-``factor`` depthwise transposed
    convolution with ``row [C, 1, 1, K]``, its full output cropped by ``-low`` / ``-high`` samples.

    Symmetric crops (and a high side up to ``factor - 1`` less) are done by the convolution's own
    ``padding`` / ``output_padding``, so no cropped view has to be copied before the next pass."""
    crop_low, crop_high = -low, -high
    inner = max(min(crop_low, crop_high + factor - 1), 0)
    extra = inner - crop_high if 0 <= inner - crop_high < factor else 0
    kernel, stride = (row, (1, factor)) if dim == 3 else (row.transpose(2, 3), (factor, 1))
    pad, output_pad = ((0, inner), (0, extra)) if dim == 3 else ((inner, 0), (extra, 0))
    x = F.conv_transpose2d(x, kernel, stride=stride, padding=pad, output_padding=output_pad, groups=x.shape[1])
    return _crop_or_pad(x, dim, low + inner, high + inner - extra)


def upsample(x: torch.Tensor, taps: torch.Tensor | None, factor: int,
             padding: tuple[int, int, int, int], gain: float = 1.0) -> torch.Tensor:
    """NVIDIA's ``upfirdn2d(x, f, up=factor, padding=padding, gain=factor² · gain)`` without zero insertion.

    ``x [N, C, H, W]``; ``taps`` ``[K]`` (separable), ``[K, K]`` or None (identity). Zero insertion,
    padding and a true convolution with ``f`` equal a stride-``factor`` transposed convolution with
    ``f`` itself, whose full output starts ``K - 1 - pad_lo`` samples earlier: that offset is cropped
    (or zero-padded) per side. ``gain`` scales the taps (the leaky ReLU's √2 is folded in here: for a
    positive gain, lrelu(g·u) = g·lrelu(u), and scaling K taps is cheaper than a pass over the signal).
    """
    x0, x1, y0, y1 = padding
    if taps is None:
        if factor != 1:
            taps = torch.ones(1, device=x.device)
        else:
            x = _crop_or_pad(_crop_or_pad(x, 3, x0, x1), 2, y0, y1)
            return x * gain if gain != 1 else x
    channels, k = x.shape[1], taps.shape[-1]
    taps = taps.to(x.dtype)
    if taps.dim() == 2:
        kernel = (taps * (factor ** 2 * gain)).expand(channels, 1, k, k)
        x = F.conv_transpose2d(x, kernel, stride=factor, groups=channels)
        x = _crop_or_pad(x, 3, x0 - k + 1, x1 - k + factor)
        return _crop_or_pad(x, 2, y0 - k + 1, y1 - k + factor)
    # the gain goes into the first pass's taps only
    row = (taps * (factor * gain)).reshape(1, 1, 1, k).expand(channels, 1, 1, k)
    x = _transposed_pass(x, row, factor, 3, x0 - k + 1, x1 - k + factor)
    row = (taps * factor).reshape(1, 1, 1, k).expand(channels, 1, 1, k)
    return _transposed_pass(x, row, factor, 2, y0 - k + 1, y1 - k + factor)


def downsample(x: torch.Tensor, taps: torch.Tensor | None, factor: int) -> torch.Tensor:
    """NVIDIA's ``upfirdn2d(x, f, down=factor)``: convolve with ``f`` (no padding), keep every
    ``factor``-th sample from the first — here as a strided depthwise convolution, so the samples
    that would be thrown away are never computed. ``taps`` ``[K]``, ``[K, K]`` or None."""
    if taps is None:
        return x if factor == 1 else x[:, :, ::factor, ::factor]
    channels, k = x.shape[1], taps.shape[-1]
    taps = taps.to(x.dtype).flip(list(range(taps.dim())))  # a convolution, not a correlation
    if taps.dim() == 2:
        return F.conv2d(x, taps.expand(channels, 1, k, k), stride=factor, groups=channels)
    row = taps.reshape(1, 1, 1, k).expand(channels, 1, 1, k)
    x = F.conv2d(x, row, stride=(1, factor), groups=channels)
    return F.conv2d(x, row.transpose(2, 3), stride=(factor, 1), groups=channels)


def _scaled_weight(weight: torch.Tensor, scale: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``weight × scale``, written channels-last when the convolution's input is (so the convolution
    does not copy the weight into that format again); autograd's path stays a plain product."""
    if not channels_last or weight.requires_grad or scale.requires_grad:
        return weight * scale
    return torch.mul(weight, scale, out=torch.empty_like(weight, memory_format=torch.channels_last))


def modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool,
                   input_gain: torch.Tensor, padding: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """NVIDIA's ``modulated_conv2d`` (with pre-normalisation and ``input_gain``) in its fused form.

    ``x [N, I, H, W]``, ``weight [O, I, k, k]``, ``styles [N, I]``, ``input_gain`` scalar, ``bias [O]``
    (added, as the layer does next) → ``[N, O, H + 2p - k + 1, …]``. Each sample's weight is modulated
    by its styles, demodulated and scaled by ``input_gain`` (an ``[O, I, k, k]`` product, cheap), and
    convolved with the bias: one pass over the activations, where the non-fused form (scale the input,
    convolve, scale the output, add the bias) takes four and allocates three more large tensors.
    On CPUs a convolution's time per image at these sizes does not depend on the batch, so samples
    run one after another (a batched caller: :class:`SynthesisNetwork`).
    """
    n, out_channels, in_channels = x.shape[0], weight.shape[0], weight.shape[1]
    if demodulate:
        # with q_oi = Σ_k w_oik², pre-normalisation r_o = (mean_ik w_oik²)^-½ and s' = s (mean s²)^-½,
        # NVIDIA's demodulation (Σ_ik (r_o w_oik s'_i)² + ε)^-½ is one [N, I] × [I, O] product
        flat = weight.reshape(out_channels, in_channels, -1)
        squares = torch.einsum("oik,oik->oi", flat, flat)
        pre = (squares.sum(dim=1) / flat[0].numel()).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        out_scale = pre * ((styles.square() @ squares.T) * pre.square() + 1e-8).rsqrt()       # [N, O]
    outputs = []
    for index in range(n):
        w = _scaled_weight(weight, (styles[index] * input_gain).reshape(1, -1, 1, 1), x.is_contiguous(
            memory_format=torch.channels_last) and x.dim() == 4)
        if demodulate:
            scale = out_scale[index].reshape(-1, 1, 1, 1)
            w = w * scale if w.requires_grad else w.mul_(scale)
        outputs.append(F.conv2d(x[index:index + 1], w, bias, padding=padding))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


# ---------------------------------------------------------------------- modules
class SynthesisInput(nn.Module):
    """Fourier features ``[N, C, S, S]`` of ``w [N, w_dim]``: the affine's (cos, sin, tx, ty) rotate and
    translate the sampling grid, after the user ``transform`` (NVIDIA's buffer: an *inverse* transform,
    output coordinates → feature coordinates)."""

    def __init__(self, spec: InputSpec, w_dim: int) -> None:
        super().__init__()
        self.spec = spec
        channels = spec.channels
        self.weight = nn.Parameter(torch.zeros(channels, channels))
        self.affine = FullyConnected(w_dim, 4)
        # the file's transform replaces it (identity in released files); zeros, not eye: on the meta device
        # of weights.build_with_state any op beyond randn/zeros/ones/empty/full imports torch._dynamo (~2 s, 70 MiB)
        self.register_buffer("transform", torch.zeros(3, 3))
        self.register_buffer("freqs", torch.zeros(channels, 2))
        self.register_buffer("phases", torch.zeros(channels))

    def grid(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample positions along x (and y): pixel centres, in units of the image width, centred on 0
        (what ``affine_grid(align_corners=False)`` with NVIDIA's theta gives)."""
        size = self.spec.size
        positions = (torch.arange(size, device=device, dtype=torch.float32) + 0.5 - size / 2) / self.spec.sampling_rate
        return positions, positions

    def forward(self, w: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        """``w [N, w_dim]`` → ``[N, channels, size, size]``; ``transform [3, 3]`` replaces the stored
        buffer when given (a view's geometric edit)."""
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = t.unbind(dim=1)
        rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # [N, 2, 2]
        user = (self.transform if transform is None else transform).to(w.dtype)
        # NVIDIA's (m_r @ m_t @ user)[:2]: m_r's top rows are [R | 0], m_t's [I | -t], so it is
        # R · (user[:2] - t ⊗ user[2]); only its first two rows are ever used
        shift = torch.stack([tx, ty], 1)
        combined = rotation @ (user[:2].unsqueeze(0) - shift.unsqueeze(2) * user[2].reshape(1, 1, 3))
        linear, offset = combined[:, :, :2], combined[:, :, 2]
        freqs = self.freqs.unsqueeze(0) @ linear                                    # [N, C, 2]
        phases = self.phases + (self.freqs @ offset.T).T                            # [N, C]
        bandwidth, rate = self.spec.bandwidth, self.spec.sampling_rate
        amplitudes = (1 - (freqs.norm(dim=2) - bandwidth) / (rate / 2 - bandwidth)).clamp(0, 1)
        gx, gy = self.grid(w.device)
        # sin(2π(fx·x + fy·y + φ)) for every (y, x): [N, S, S, C]
        argument = (gy.reshape(1, -1, 1, 1) * freqs[:, None, None, :, 1] + gx.reshape(1, 1, -1, 1)
                    * freqs[:, None, None, :, 0] + phases[:, None, None, :])
        features = torch.sin(argument * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = features @ (self.weight / math.sqrt(self.spec.channels)).T
        # [N, S, S, C] viewed as [N, C, S, S] is already channels-last: the layers run in that format
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    """Modulated conv + filtered leaky ReLU (the final ToRGB: 1×1 conv, no demodulation, linear)."""

    def __init__(self, spec: LayerSpec, w_dim: int) -> None:
        super().__init__()
        self.spec = spec
        kernel = spec.conv_kernel
        self.affine = FullyConnected(w_dim, spec.in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.zeros(spec.out_channels, spec.in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", torch.zeros(spec.up_filter) if spec.up_filter else None)
        self.register_buffer("down_filter", torch.zeros(spec.down_filter) if spec.down_filter else None)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x [N, in_channels, in_size, in_size]``, ``w [N, w_dim]`` → ``[N, out_channels, out_size, out_size]``."""
        spec = self.spec
        styles = self.affine(w)
        if spec.is_torgb:
            styles = styles * (1 / math.sqrt(spec.in_channels * spec.conv_kernel ** 2))
        x = modulated_conv(x, self.weight, styles, demodulate=not spec.is_torgb,
                           input_gain=self.magnitude_ema.rsqrt(), padding=spec.conv_kernel - 1, bias=self.bias)
        x = upsample(x, self.up_filter, spec.up_factor, spec.padding, gain=1.0 if spec.is_torgb else LRELU_GAIN)
        # in place where autograd does not need the input: a fresh large tensor costs more (page faults)
        # than the arithmetic on it
        inplace = not x.requires_grad
        if not spec.is_torgb:  # the ToRGB layer is linear (slope 1, gain 1); the gain is in the up filter
            x = F.leaky_relu_(x, LRELU_SLOPE) if inplace else F.leaky_relu(x, LRELU_SLOPE)
        if spec.conv_clamp is not None:
            x = x.clamp_(-spec.conv_clamp, spec.conv_clamp) if inplace else x.clamp(-spec.conv_clamp, spec.conv_clamp)
        return downsample(x, self.down_filter, spec.down_factor)


class SynthesisNetwork(nn.Module):
    """``input`` then the layers ``L0_…`` … ``L{n}_{R}_{img_channels}`` (the last is the ToRGB), × ``output_scale``."""

    def __init__(self, config: StyleGAN3Config) -> None:
        super().__init__()
        self.config = config
        self.input = SynthesisInput(config.input, config.w_dim)
        for spec in config.layers:
            setattr(self, spec.name, SynthesisLayer(spec, config.w_dim))

    def layers(self) -> list[SynthesisLayer]:
        return [getattr(self, spec.name) for spec in self.config.layers]

    def forward(self, ws: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        """``ws [N, num_ws, w_dim]`` → images ``[N, img_channels, R, R]`` (contiguous); ``transform [3, 3]``
        overrides the input's stored user transform.

        Activations are channels-last (CPU depthwise filters run 2-4× faster in it than in NCHW).
        Large networks run one sample at a time: the convolutions are per sample anyway
        (:func:`modulated_conv`), and it saves concatenating every layer's output."""
        if ws.shape[0] > 1 and activation_elements(self.config) >= PER_SAMPLE_ELEMENTS:
            return torch.cat([self._forward(ws[index:index + 1], transform) for index in range(ws.shape[0])])
        return self._forward(ws, transform)

    def _forward(self, ws: torch.Tensor, transform: torch.Tensor | None) -> torch.Tensor:
        x = self.input(ws[:, 0], transform)
        for index, layer in enumerate(self.layers(), start=1):
            x = layer(x, ws[:, index])
        x = x.contiguous()
        return x * self.config.output_scale if self.config.output_scale != 1 else x

    def style_layers(self) -> list[nn.Module]:
        """The module whose affine reads each W+ slot: the input, then every layer in order."""
        return [self.input, *self.layers()]


class StyleGAN3Generator(nn.Module):
    """``mapping`` (StyleGAN2's network) + ``synthesis``, with NVIDIA's G_ema parameter names."""

    def __init__(self, config: StyleGAN3Config) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config.mapping)  # type: ignore[arg-type]  # reads the same fields
        self.synthesis = SynthesisNetwork(config)


__all__ = ["InputSpec", "LayerSpec", "MappingConfig", "StyleGAN3Config", "StyleGAN3Generator", "activation_elements",
           "downsample", "modulated_conv", "parameter_count", "upsample"]
