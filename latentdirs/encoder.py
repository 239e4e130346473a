"""Amortised inversion (LORD stage 2): a CNN that predicts a generator's latent from its image.

:func:`train_encoder` trains :class:`Encoder` on pairs ``(G(ℓ), ℓ)`` drawn fresh every step from the
generator's prior — ``ℓ`` in the space the inversion works in (``z`` for DCGAN/module/BigGAN, ``w`` or
``w+`` for StyleGAN2). No data set is stored: the generator is the data. One forward pass then gives
an inversion (``invert --steps 0``) or the optimiser's start (``invert --encoder FILE``).

Training, per step (everything derived from ``(seed, step)``, so a run is repeatable and a resumed run
equals an uninterrupted one bit for bit):

* ``B`` latents from the prior and, for a conditional generator, ``B`` uniform classes;
* the images ``x = G(ℓ, c)`` (no gradient), lightly augmented (``augment=True``): a shift by up to two
  pixels (edge pixels repeated), brightness/contrast/per-channel gain within a few per cent, Gaussian
  noise of σ ≤ 0.03 — real photo crops are never exactly centred nor exactly G's colours;
* loss = ``MSE(ℓ̂, ℓ)`` in *standardised* coordinates (each latent coordinate divided by its prior std,
  so w's scale does not matter) ``+ recon_weight · MSE(G(ℓ̂, c), x_clean)`` ``+ CE(class logits, c)``
  for conditional generators (the class is part of the inversion). The reconstruction goes through G
  with the *true* class: the adapters take class ids, not soft vectors, and the class head is trained
  by its own cross-entropy;
* Adam, learning rate with a cosine decay to 2 % over ``steps`` (so ``steps`` is part of the recipe
  and must match on resume).

The network (:class:`EncoderNet`): stride-2 4×4 convolutions halving the resolution down to 4×4
(channels ``base_channels·2^i`` capped at ``max_channels``), GroupNorm and LeakyReLU(0.2) between
them, then a linear head to the standardised latent and, for conditional generators, a linear class
head. About 1.1 M parameters at 64 px — small enough to ship in half precision.

File (``save``/``load``; never pickle): a safetensors file whose tensors are the network's parameters
(``net.<name>``) and the latent standardisation (``latent_mean``, ``latent_std``), and whose metadata
key ``latentdirs`` holds one JSON header — schema ``latentdirs.encoder`` v1, library version, created
time (``SOURCE_DATE_EPOCH`` honoured), the generator's ``describe()`` (with its fingerprint: a file is
refused on other weights), space, latent shape, classes, architecture, training options, seed,
storage dtype and the metrics measured at the end of training. See docs/inversion.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import nn

from latentdirs.atomic import check_writable_directory, write_bytes_atomic
from latentdirs.directions import creation_time
from latentdirs.distributed import data_parallel, equal_share, mean_over_ranks
from latentdirs.errors import (FingerprintMismatchError, LatentDirsError, as_finite,
                               check_count, check_positive, check_seed, invalid)
from latentdirs.generators.base import GeneratorAdapter, LatentSpace
from latentdirs.version import __version__

if TYPE_CHECKING:
    from latentdirs.distributed import Ranks

SCHEMA_NAME = "latentdirs.encoder"
SCHEMA_VERSION = 1
HEADER_KEY = "latentdirs"
CHECKPOINT_FORMAT = "latentdirs.encoder-checkpoint/1"
#: the largest encoder file read (bytes); a 1024-px StyleGAN2 w+ encoder at the defaults is ~60 MiB
MAX_FILE_BYTES = 512 * 2**20
#: the largest safetensors header read (its tensor table plus our JSON header)
MAX_HEADER_BYTES = 4 * 2**20
#: seeds of the held-out images the end-of-training metrics are measured on (training latents come from
#: hashed per-step seeds, so small seeds such as these are never training images)
HELDOUT_SEEDS = tuple(range(64))
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: progress(step, total_steps, loss) after every step
Progress = Callable[[int, int, float], None]
_FIX = "The file is damaged or was edited by hand; re-create it with 'latentdirs train-encoder'"


class EncoderError(LatentDirsError, ValueError):
    """An encoder file is unreadable, corrupt, of a newer schema, or made for other weights or shapes."""


# ---------------------------------------------------------------------------------------------- network
@dataclass(frozen=True)
class Architecture:
    """Hyper-parameters that rebuild :class:`EncoderNet` (recorded in the file's header)."""

    resolution: int
    out_features: int
    num_classes: int = 0
    base_channels: int = 32
    max_channels: int = 256

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "conv4x4-groupnorm", "resolution": self.resolution, "out_features": self.out_features,
                "num_classes": self.num_classes, "base_channels": self.base_channels,
                "max_channels": self.max_channels}


def _stages(resolution: int) -> int:
    """Stride-2 stages from ``resolution`` down to about 4 px (at least one)."""
    return max(1, int(math.floor(math.log2(resolution / 4))))


class EncoderNet(nn.Module):
    """Images ``[N, 3, R, R]`` in [-1, 1] → (standardised latent ``[N, out_features]``, class logits ``[N, C]``).

    The logits are ``[N, 0]`` for an unconditional generator.
    """

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels_in = 3
        for i in range(_stages(arch.resolution)):
            channels = min(arch.base_channels * 2 ** i, arch.max_channels)
            layers.append(nn.Conv2d(channels_in, channels, 4, 2, 1))
            if i > 0:  # the first layer sees raw pixels; normalising them would discard the global colour
                layers.append(nn.GroupNorm(min(8, channels), channels))
            layers.append(nn.LeakyReLU(0.2))
            channels_in = channels
        layers.append(nn.AdaptiveAvgPool2d(4))  # exact identity at powers of two; handles other sizes
        self.features = nn.Sequential(*layers)
        self.latent = nn.Linear(channels_in * 16, arch.out_features)
        self.classes = nn.Linear(channels_in * 16, arch.num_classes) if arch.num_classes else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(images).flatten(1)
        logits = self.classes(features) if self.classes is not None else features.new_zeros(len(features), 0)
        return self.latent(features), logits


# ---------------------------------------------------------------------------------------------- encoder
class Encoder:
    """A trained encoder for one generator's latent space.

    Attributes:
        net: the :class:`EncoderNet` (eval mode, on the generator's device).
        generator: the adapter it predicts latents for.
        space: the :class:`~latentdirs.generators.base.LatentSpace` of the predictions.
        meta: the JSON header (dict) :meth:`save` writes.
    """

    def __init__(self, net: EncoderNet, *, generator: GeneratorAdapter, space: str, latent_mean: torch.Tensor,
                 latent_std: torch.Tensor, meta: Mapping[str, Any]) -> None:
        self.generator = generator
        self.space: LatentSpace = generator.space(space)
        self.net = net.to(generator.device).eval()
        self.latent_mean = latent_mean.to(generator.device, torch.float32)
        self.latent_std = latent_std.to(generator.device, torch.float32)
        self.meta: dict[str, Any] = dict(meta)

    # ------------------------------------------------------------------ prediction
    @property
    def conditional(self) -> bool:
        return self.net.classes is not None

    def _check_images(self, images: Any) -> torch.Tensor:
        size = self.generator.resolution
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise invalid("images", shape, f"a tensor [N, 3, {size}, {size}] (the generator's resolution) in [-1, 1]",
                          "Prepare photos with latentdirs.photos first")
        images = images.to(self.generator.device, torch.float32)
        if not bool(torch.isfinite(images).all()):
            raise invalid("images", "a tensor with NaN or infinite values", "finite pixel values in [-1, 1]")
        return images

    def _forward(self, images: Any, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        images = self._check_images(images)
        self.net.eval()
        outputs, logits = [], []
        with torch.no_grad():
            for chunk in images.split(batch_size):
                standardised, chunk_logits = self.net(chunk)
                outputs.append(self.latent_mean + self.latent_std * standardised)
                logits.append(chunk_logits)
        if not outputs:
            return torch.empty(self.space.shape(0), device=self.generator.device), images.new_zeros(0, 0)
        return torch.cat(outputs).reshape(self.space.shape(len(images))), torch.cat(logits)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Latents ``[N, D]`` (or ``[N, L, D]`` for a layered space) of ``images`` ``[N, 3, R, R]`` in [-1, 1].

        On the generator's device, float32, without gradient. For a ``z`` space the prediction is not
        clamped to the prior's ball: the caller decides (the optimiser clamps its start).
        """
        return self._forward(images)[0]

    def class_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax class probabilities ``[N, C]`` of a conditional generator's classes."""
        self._require_classes()
        return torch.softmax(self._forward(images)[1], dim=1)

    def predict_classes(self, images: torch.Tensor) -> torch.Tensor:
        """The most probable class id of each image, LongTensor ``[N]`` on the generator's device."""
        self._require_classes()
        return self._forward(images)[1].argmax(1)

    def _require_classes(self) -> None:
        if not self.conditional:
            raise invalid("predict_classes", self.generator.spec, "a conditional generator's encoder",
                          f"{self.generator.spec!r} is unconditional: its encoder predicts latents only")

    # ------------------------------------------------------------------ file I/O
    def to_bytes(self, *, dtype: str | None = None) -> bytes:
        """The file's bytes; ``dtype`` ``"float32"``/``"float16"`` (default: the header's ``storage_dtype``)."""
        from safetensors.torch import save

        dtype = dtype or self.meta.get("storage_dtype", "float32")
        if dtype not in STORAGE_DTYPES:
            raise invalid("dtype", dtype, ", ".join(STORAGE_DTYPES))
        meta = {**self.meta, "storage_dtype": dtype}
        tensors = {f"net.{name}": value.detach().to("cpu", STORAGE_DTYPES[dtype]).contiguous()
                   for name, value in self.net.state_dict().items()}
        tensors["latent_mean"] = self.latent_mean.detach().cpu().contiguous()
        tensors["latent_std"] = self.latent_std.detach().cpu().contiguous()
        return save(tensors, metadata={HEADER_KEY: json.dumps(meta, sort_keys=True)})

    def save(self, path: str | Path, *, dtype: str | None = None) -> Path:
        """Write the file atomically; ``dtype="float16"`` halves it (weights rounded, the standardisation
        kept in float32). Returns the path."""
        path = Path(path)
        data = self.to_bytes(dtype=dtype)
        write_bytes_atomic(path, data)
        self.meta["storage_dtype"] = dtype or self.meta.get("storage_dtype", "float32")
        return path

    def rounded(self, dtype: str) -> "Encoder":
        """This encoder with its weights rounded to ``dtype`` as a file of that dtype stores them."""
        net = EncoderNet(architecture_from(self.meta["architecture"]))
        net.load_state_dict({k: v.to(STORAGE_DTYPES[dtype]).float() for k, v in self.net.state_dict().items()})
        return Encoder(net, generator=self.generator, space=self.space.name, latent_mean=self.latent_mean,
                       latent_std=self.latent_std, meta={**self.meta, "storage_dtype": dtype})

    @classmethod
    def load(cls, path: str | Path, *, generator: GeneratorAdapter, strict: bool = True) -> "Encoder":
        """Read and validate an encoder file for ``generator``.

        Refused, each with one line: a missing, oversized or non-safetensors file; a header of another
        or newer schema, or with a field of the wrong type; a file made on other weights (fingerprint;
        ``strict=False`` allows it); a space the generator lacks or of another shape; tensors missing,
        extra, of another shape or dtype, or not finite.
        """
        path = Path(path)
        data = _read_file(path)
        meta = _parse_header(path, data)
        _check_generator(path, meta, generator, strict)
        arch = architecture_from(meta["architecture"])
        net = EncoderNet(arch)
        tensors = _load_tensors(path, data)
        expected = {f"net.{k}": v for k, v in net.state_dict().items()}
        width = arch.out_features
        expected["latent_mean"] = torch.zeros(width)
        expected["latent_std"] = torch.zeros(width)
        _check_tensors(path, tensors, expected, meta["storage_dtype"])
        if not bool((tensors["latent_std"] > 0).all()):
            raise EncoderError(f"encoder: {str(path)!r}: latent_std has values ≤ 0; {_FIX}")
        net.load_state_dict({k[len("net."):]: v.float() for k, v in tensors.items() if k.startswith("net.")})
        return cls(net, generator=generator, space=meta["space"], latent_mean=tensors["latent_mean"].float(),
                   latent_std=tensors["latent_std"].float(), meta=meta)


def architecture_from(record: Mapping[str, Any]) -> Architecture:
    """The :class:`Architecture` of a header's (validated) ``architecture`` entry."""
    return Architecture(resolution=record["resolution"], out_features=record["out_features"],
                        num_classes=record["num_classes"], base_channels=record["base_channels"],
                        max_channels=record["max_channels"])


# ---------------------------------------------------------------------------------------------- training
def train_encoder(generator: GeneratorAdapter, *, space: str = "z", steps: int = 3000, batch_size: int = 32,
                  lr: float = 1e-3, seed: int = 0, checkpoint: str | Path | None = None,
                  checkpoint_every: int = 200, resume: bool = False, progress: Progress | None = None,
                  augment: bool = True, recon_weight: float = 10.0, base_channels: int = 32,
                  max_channels: int = 256, ranks: "Ranks | None" = None) -> Encoder:
    """Train an :class:`Encoder` for ``generator``'s latent ``space`` on freshly sampled ``(G(ℓ), ℓ)`` pairs.

    Args:
        space: the space to predict (``"z"``; ``"w"`` / ``"w+"`` for StyleGAN2 — ``w+`` predicts ``[L, D]``).
        steps, batch_size, lr: Adam steps, pairs per step, peak learning rate (cosine decay to 2 %).
        seed: makes the run repeatable (initial weights, latents, classes, augmentation).
        checkpoint, checkpoint_every, resume: write a checkpoint (safetensors, atomically) every N
            steps and at the end; with ``resume`` continue from it to the same weights an uninterrupted
            run gives, bit for bit (every option and the seed must match).
        progress: called as ``progress(step, steps, loss)`` after every step.
        augment: light shift/colour/noise augmentation of the training images (see the module docstring).
        recon_weight: weight of the image term ``MSE(G(ℓ̂), G(ℓ))`` (0 = latent loss only).
        base_channels, max_channels: the network's width.
        ranks: a launched run (:func:`latentdirs.distributed.setup`, under ``torchrun``): data-parallel
            training with DistributedDataParallel — every rank draws the step's whole batch of latents
            (seeded as one process draws it), renders and learns from its own ``batch_size / world_size``
            rows, and the gradients are averaged; the result is one process's with the same global
            batch up to the reduction's float rounding. Rank 0 alone writes checkpoints and measures
            the held-out metrics (the other ranks' encoders carry none).

    Returns:
        the trained :class:`Encoder`, its header holding the options and held-out metrics
        (:func:`heldout_metrics` on :data:`HELDOUT_SEEDS`).
    """
    steps, batch_size = check_count("steps", steps), check_count("batch_size", batch_size)
    checkpoint_every, seed = check_count("checkpoint_every", checkpoint_every), check_seed("seed", seed)
    lr = check_positive("lr", lr)
    recon_weight = check_positive("recon_weight", recon_weight, zero=True)
    base_channels = check_count("base_channels", base_channels, 1, 4096)
    max_channels = check_count("max_channels", max_channels, base_channels, 4096)
    if not isinstance(augment, bool):
        raise invalid("augment", augment, "True or False")
    rows = equal_share(batch_size, ranks)
    target = generator.space(space)
    if generator.resolution < 8:
        raise invalid("generator", f"{generator.spec} at {generator.resolution} px", "generators of at least 8 px")
    if resume and checkpoint is None:
        raise invalid("resume", True, "resume together with a checkpoint file", "Pass --checkpoint FILE")
    writes = ranks is None or ranks.is_main  # the checkpoint is rank 0's
    if checkpoint is not None and writes:  # fail now, not after checkpoint_every steps
        check_writable_directory(Path(checkpoint).parent, param="checkpoint")
    arch = Architecture(resolution=generator.resolution, out_features=target.num_layers * target.dim,
                        num_classes=generator.num_classes, base_channels=base_channels, max_channels=max_channels)
    options = {"steps": steps, "batch_size": batch_size, "lr": lr, "augment": augment,
               "recon_weight": recon_weight, "schedule": "cosine-to-2%", "loss": "standardised-latent-mse"
               + ("+image-mse" if recon_weight else "") + ("+class-ce" if arch.num_classes else "")}

    with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the caller's RNG
        torch.manual_seed(seed)
        net = EncoderNet(arch).to(generator.device)
    mean, std = _latent_statistics(generator, target, seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    history: list[float] = []
    first_step = 0
    identity = {"options": options, "seed": seed, "space": target.name, "fingerprint": generator.fingerprint(),
                "architecture": arch.as_dict()}
    if resume:
        first_step, history = _load_checkpoint(checkpoint, net, optimiser, identity)
    net.train()
    model = net if ranks is None else data_parallel(net, ranks)
    for step in range(first_step, steps):
        for group in optimiser.param_groups:
            group["lr"] = _learning_rate(lr, step, steps)
        loss = _training_loss(generator, target, model, mean, std, _step_seed(seed, step), batch_size,
                              augment, recon_weight, rows=rows)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: the ranks' gradients averaged = the whole batch's mean loss's
        optimiser.step()
        history.append(loss.item() if ranks is None else mean_over_ranks(loss))
        if progress is not None:
            progress(step + 1, steps, history[-1])
        if writes and checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            _save_checkpoint(checkpoint, net, optimiser, identity, step + 1, history)
    if ranks is not None:
        ranks.barrier()  # no rank reads on (or leaves) before rank 0's last checkpoint is written
    net.eval()
    meta = {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "library_version": __version__,
            "created": creation_time(), "generator": generator.describe(), "space": target.name,
            "latent_shape": [target.num_layers, target.dim], "classes": list(generator.class_names),
            "architecture": arch.as_dict(), "training": {**options, "final_loss": history[-1] if history else None},
            "seed": seed, "storage_dtype": "float32"}
    encoder = Encoder(net, generator=generator, space=target.name, latent_mean=mean, latent_std=std, meta=meta)
    if writes:  # the held-out measure is rank 0's: the other ranks' encoders are not written
        encoder.meta["metrics"] = heldout_metrics(encoder)
    return encoder


def _learning_rate(peak: float, step: int, steps: int) -> float:
    """Cosine decay from ``peak`` to 2 % of it over the run (plain floats: bit-identical on resume)."""
    floor = 0.02 * peak
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * step / max(1, steps)))


def _step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for ``(seed, step)`` by hashing, so training latents never coincide with G's seed-``s``
    images for small seeds ``s`` (the held-out and benchmark images)."""
    digest = hashlib.sha256(f"latentdirs.encoder/{seed}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _latent_statistics(generator: GeneratorAdapter, space: LatentSpace, seed: int,
                       samples: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate mean and std ``[L·D]`` of the prior in ``space`` (the targets' standardisation)."""
    with torch.no_grad():
        latents = generator.sample(samples, seed=_step_seed(seed, -1), space=space.name,
                                   classes=_random_classes(generator, samples, _step_seed(seed, -2)))
    flat = latents.reshape(samples, -1).float()
    return flat.mean(0), flat.std(0).clamp_min(1e-6)


def _random_classes(generator: GeneratorAdapter, n: int, seed: int) -> torch.Tensor | None:
    if not generator.conditional:
        return None
    return torch.randint(generator.num_classes, (n,), generator=torch.Generator().manual_seed(seed))


def _training_loss(generator: GeneratorAdapter, space: LatentSpace, net: nn.Module, mean: torch.Tensor,
                   std: torch.Tensor, step_seed: int, batch_size: int, augment: bool,
                   recon_weight: float, rows: slice = slice(None)) -> torch.Tensor:
    """One step's loss on a fresh batch (see the module docstring); ``rows``: the share of the batch this
    process learns from (data-parallel runs; the whole batch is drawn, so every share is the one a single
    process would see at those rows)."""
    classes = _random_classes(generator, batch_size, step_seed ^ 0x5EED)
    with torch.no_grad():
        latents = generator.sample(batch_size, seed=step_seed, space=space.name, classes=classes)
        classes = None if classes is None else classes[rows]
        latents = latents[rows]
        images = generator.synthesize(latents, space=space.name, classes=classes)
    count = len(latents)
    inputs = (augment_images(images, torch.Generator().manual_seed(step_seed ^ 0xA06), rows=rows, total=batch_size)
              if augment else images)
    standardised, logits = net(inputs)
    target = (latents.reshape(count, -1) - mean) / std
    loss = torch.mean((standardised - target) ** 2)
    if recon_weight:
        predicted = (mean + std * standardised).reshape(space.shape(count))
        rendered = generator.synthesize(predicted, space=space.name, classes=classes)
        loss = loss + recon_weight * torch.mean((rendered - images) ** 2)
    if classes is not None:
        loss = loss + nn.functional.cross_entropy(logits, classes.to(logits.device))
    return loss


def augment_images(images: torch.Tensor, rng: torch.Generator, *, shift: int = 2, rows: slice = slice(None),
                   total: int | None = None) -> torch.Tensor:
    """Lightly perturbed copies of ``images`` ``[N, 3, R, R]`` in [-1, 1] (same shape, clamped to [-1, 1]).

    Per image: a shift by up to ``shift`` pixels each way (edge pixels repeated), brightness ±0.05,
    contrast ×[0.95, 1.05] about the image mean, per-channel gain ×[0.97, 1.03], Gaussian noise of
    std uniform in [0, 0.03]. Every random draw comes from ``rng`` (CPU), so it is repeatable.
    ``images`` may be the rows ``rows`` of a batch of ``total``: the draws are made for the whole batch
    and those rows' used, so a share of a batch is perturbed as it is in the whole batch.
    """
    _, _, size, _ = images.shape
    n = images.shape[0] if total is None else total

    def share(values: torch.Tensor) -> torch.Tensor:
        return values[rows]

    offsets = share(torch.randint(0, 2 * shift + 1, (n, 2), generator=rng))
    padded = nn.functional.pad(images, (shift,) * 4, mode="replicate")
    shifted = torch.stack([padded[i, :, int(dy):int(dy) + size, int(dx):int(dx) + size]
                           for i, (dy, dx) in enumerate(offsets.tolist())])
    def uniform(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        return share(low + (high - low) * torch.rand(shape, generator=rng)).to(images.device)

    brightness = uniform((n, 1, 1, 1), -0.05, 0.05)
    contrast = uniform((n, 1, 1, 1), 0.95, 1.05)
    gain = uniform((n, 3, 1, 1), 0.97, 1.03)
    noise = share(torch.randn((n, *images.shape[1:]), generator=rng)).to(images.device) * uniform((n, 1, 1, 1), 0.0, 0.03)
    centre = shifted.mean(dim=(1, 2, 3), keepdim=True)
    return ((shifted - centre) * contrast + centre + brightness) * gain + noise


def heldout_metrics(encoder: Encoder, seeds: tuple[int, ...] | list[int] = HELDOUT_SEEDS) -> dict[str, Any]:
    """Latent MSE (raw and standardised), image PSNR of ``G(E(G(ℓ)))`` against ``G(ℓ)`` and, for a
    conditional generator, class accuracy, on the prior images of ``seeds`` (class = seed mod C).

    PSNR is in dB for images in [-1, 1] (peak-to-peak 2): ``10·log10(4 / MSE)``, per image, then averaged.
    """
    generator, space = encoder.generator, encoder.space
    classes = (torch.tensor([s % generator.num_classes for s in seeds]) if generator.conditional else None)
    with torch.no_grad():
        latents = generator.sample_seeds(list(seeds), space=space.name, classes=classes)
        images = generator.synthesize(latents, space=space.name, classes=classes)
        predicted = encoder(images)
        rendered = generator.synthesize(predicted, space=space.name, classes=classes)
    errors = ((rendered - images) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    latent_error = (predicted - latents).reshape(len(seeds), -1)
    metrics: dict[str, Any] = {
        "heldout_seeds": f"{seeds[0]}-{seeds[-1]}" if list(seeds) == list(range(seeds[0], seeds[-1] + 1)) else list(seeds),
        "latent_mse": float((latent_error ** 2).mean()),
        "standardised_latent_mse": float(((latent_error / encoder.latent_std) ** 2).mean()),
        "psnr_db": float((10 * torch.log10(4.0 / errors)).mean()),
    }
    if classes is not None:
        metrics["class_accuracy"] = float((encoder.predict_classes(images).cpu() == classes).float().mean())
    return metrics


# ---------------------------------------------------------------------------------------------- checkpoints
def _save_checkpoint(path: str | Path, net: EncoderNet, optimiser: torch.optim.Optimizer, identity: dict[str, Any],
                     step: int, history: list[float]) -> None:
    """Weights, Adam moments and step counts as tensors, and the run's identity as JSON: a safetensors file."""
    from safetensors.torch import save

    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    for index, parameter in enumerate(net.parameters()):
        state = optimiser.state.get(parameter, {})
        for key in ("step", "exp_avg", "exp_avg_sq"):
            if key in state:
                tensors[f"adam.{index}.{key}"] = torch.as_tensor(state[key]).detach().cpu().contiguous()
    tensors["history"] = torch.tensor(history, dtype=torch.float64)
    header = {"format": CHECKPOINT_FORMAT, "step": step, **identity}
    write_bytes_atomic(path, save(tensors, metadata={HEADER_KEY: json.dumps(header, sort_keys=True)}))


def _load_checkpoint(path: str | Path | None, net: EncoderNet, optimiser: torch.optim.Optimizer,
                     identity: dict[str, Any]) -> tuple[int, list[float]]:
    """Restore weights and Adam state from a checkpoint of *this* run; returns (next step, loss history)."""
    path = Path(str(path))
    name = path.name
    fix = "Give the file this run's --checkpoint wrote, or start again without --resume"
    if not path.is_file():
        raise invalid("checkpoint", str(path), "an existing checkpoint file to resume from", "Run without --resume first")
    data = _read_file(path, param="checkpoint")
    header = _metadata(path, data, param="checkpoint")
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise invalid("checkpoint", f"{name}: format {found!r}", f"an encoder checkpoint ({CHECKPOINT_FORMAT})", fix,
                      cls=EncoderError)
    step = header.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= identity["options"]["steps"]:
        raise invalid("checkpoint", f"{name}: step {step!r}", f"a step 0-{identity['options']['steps']}", fix,
                      cls=EncoderError)
    mine = json.loads(json.dumps(identity, sort_keys=True))
    saved = {k: header.get(k) for k in mine}
    if saved != mine:
        changed = sorted(k for k in mine if saved[k] != mine[k])
        detail = sorted(k for k in mine["options"] if (saved.get("options") or {}).get(k) != mine["options"][k]) \
            if "options" in changed and isinstance(saved.get("options"), dict) else []
        raise invalid("resume", str(path), "the same generator, space, architecture, options and seed as the "
                      "interrupted run", f"These differ: {detail or changed}", cls=EncoderError)
    tensors = _load_tensors(path, data, param="checkpoint")
    parameters = list(net.parameters())
    expected = {f"net.{k}": v for k, v in net.state_dict().items()}
    for index, parameter in enumerate(parameters):
        if step > 0:
            expected[f"adam.{index}.step"] = torch.zeros(())
            expected[f"adam.{index}.exp_avg"] = parameter.detach()
            expected[f"adam.{index}.exp_avg_sq"] = parameter.detach()
    expected["history"] = torch.zeros(step, dtype=torch.float64)
    _check_tensors(path, tensors, expected, "float32", param="checkpoint", exact_dtype=True)
    with torch.no_grad():
        net.load_state_dict({k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")})
    if step > 0:
        state = optimiser.state_dict()
        state["state"] = {index: {"step": tensors[f"adam.{index}.step"].clone(),
                                  "exp_avg": tensors[f"adam.{index}.exp_avg"].to(parameters[index].device),
                                  "exp_avg_sq": tensors[f"adam.{index}.exp_avg_sq"].to(parameters[index].device)}
                          for index in range(len(parameters))}
        optimiser.load_state_dict(state)
    return step, [float(v) for v in tensors["history"].tolist()]


# ---------------------------------------------------------------------------------------------- reading
def _read_file(path: Path, *, param: str = "encoder") -> bytes:
    """The bytes of a safetensors file, after its size (≤ :data:`MAX_FILE_BYTES`) and header size are checked."""
    try:
        info = os.stat(path)
    except OSError:
        raise invalid(param, str(path), "an existing .safetensors file written by 'latentdirs train-encoder'",
                      "Check the path", cls=EncoderError) from None
    if not stat.S_ISREG(info.st_mode):
        raise invalid(param, str(path), "a regular file", "Give the .safetensors file, not a folder or device",
                      cls=EncoderError)
    if info.st_size > MAX_FILE_BYTES:
        raise invalid(param, f"{path} ({info.st_size:,} bytes)", f"files of at most {MAX_FILE_BYTES // 2**20} MiB",
                      "This is not an encoder file; give the one 'latentdirs train-encoder' wrote", cls=EncoderError)
    with open(path, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    length = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if len(data) < 8 or length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise invalid(param, str(path), f"a safetensors file (8-byte header length ≤ {MAX_HEADER_BYTES:,}, then "
                      "the header and the tensors)", "It is truncated or of another format; re-create it",
                      cls=EncoderError)
    return data


def _metadata(path: Path, data: bytes, *, param: str = "encoder") -> Any:
    """The JSON our ``latentdirs`` metadata key holds (any JSON value), or an error."""
    length = int.from_bytes(data[:8], "little")
    try:
        table = json.loads(data[8:8 + length])
    except (ValueError, UnicodeDecodeError, RecursionError):
        table = None
    metadata = table.get("__metadata__") if isinstance(table, dict) else None
    text = metadata.get(HEADER_KEY) if isinstance(metadata, dict) else None
    if not isinstance(text, str):
        raise invalid(param, str(path), f"a safetensors file with a '{HEADER_KEY}' JSON header",
                      "Give a file 'latentdirs train-encoder' wrote", cls=EncoderError)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise invalid(param, f"{path}: header {type(error).__name__}", "one JSON object", _FIX,
                      cls=EncoderError) from None


def _load_tensors(path: Path, data: bytes, *, param: str = "encoder") -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as error:  # safetensors raises its own error types for truncated or corrupt files
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise invalid(param, f"{path} ({reason})", "a readable safetensors file", "It is truncated or corrupt; "
                      "re-create it", cls=EncoderError) from None


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], dtype: str, *,
                   param: str = "encoder", exact_dtype: bool = False) -> None:
    """The file's tensors are exactly ``expected``'s names and shapes, of the storage dtype, and finite."""
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise invalid(param, f"{path}: tensors missing {missing[:3]} extra {extra[:3]}",
                      "exactly the tensors of the architecture its header names", _FIX, cls=EncoderError)
    for name, reference in expected.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != tuple(reference.shape):
            raise invalid(param, f"{path}: {name} of shape {tuple(tensor.shape)}", f"shape {tuple(reference.shape)} "
                          "(the header's architecture)", _FIX, cls=EncoderError)
        wanted = reference.dtype if (exact_dtype or name.startswith("latent_") or not reference.dtype.is_floating_point) \
            else STORAGE_DTYPES[dtype]
        if tensor.dtype != wanted:
            raise invalid(param, f"{path}: {name} of dtype {tensor.dtype}", f"{wanted} (storage_dtype {dtype})", _FIX,
                          cls=EncoderError)
        if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            raise invalid(param, f"{path}: {name} with NaN or infinite values", "finite values", _FIX, cls=EncoderError)


def _is_count(value: Any, low: int = 0, high: int = 2**31) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and as_finite(value) is not None)


_GENERATOR_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "spec": (lambda v: isinstance(v, str) and bool(v), "a generator spec string"),
    "fingerprint": (lambda v: isinstance(v, str) and v.startswith("sha256:"), "'sha256:<hex>'"),
    "family": (lambda v: isinstance(v, str), "a family name"),
    "resolution": (lambda v: _is_count(v, 1, 2**16), "a resolution in pixels"),
    "options": (lambda v: isinstance(v, dict), "a JSON object of load options"),
    "spaces": (lambda v: isinstance(v, dict), "a JSON object of spaces"),
    "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of class names"),
}
_ARCHITECTURE_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "kind": (lambda v: v == "conv4x4-groupnorm", "'conv4x4-groupnorm'"),
    "resolution": (lambda v: _is_count(v, 8, 2**14), "a resolution of 8-16384 px"),
    "out_features": (lambda v: _is_count(v, 1, 2**22), "a positive number of latent values"),
    "num_classes": (lambda v: _is_count(v, 0, 2**20), "a number of classes ≥ 0"),
    "base_channels": (lambda v: _is_count(v, 1, 4096), "a channel count 1-4096"),
    "max_channels": (lambda v: _is_count(v, 1, 4096), "a channel count 1-4096"),
}
_HEADER_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "library_version": (lambda v: isinstance(v, str), "a version string"),
    "created": (lambda v: v is None or isinstance(v, str), "an ISO-8601 time string or null"),
    "generator": (lambda v: isinstance(v, dict), "the generator's describe() object"),
    "space": (lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a space name such as 'z', 'w' or 'w+'"),
    "latent_shape": (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_count(x, 1, 2**20) for x in v),
                     "[layers, dim], two positive integers"),
    "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of class names"),
    "architecture": (lambda v: isinstance(v, dict), "an object of network hyper-parameters"),
    "training": (lambda v: isinstance(v, dict), "an object of training options"),
    "seed": (lambda v: _is_count(v, 0, 2**63 - 1), "a seed 0-2^63-1"),
    "storage_dtype": (lambda v: v in STORAGE_DTYPES, "'float32' or 'float16'"),
    "metrics": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "an object of measured metrics"),
}


def _parse_header(path: Path, data: bytes) -> dict[str, Any]:
    """The validated JSON header: schema and version first, then every field's type."""
    meta = _metadata(path, data)
    where = f"encoder {str(path)!r}"
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA_NAME:
        found = meta.get("schema") if isinstance(meta, dict) else type(meta).__name__
        raise invalid(f"{where}: schema", found, repr(SCHEMA_NAME), "Give a file 'latentdirs train-encoder' wrote",
                      cls=EncoderError)
    version = meta.get("schema_version")
    if not _is_count(version, 1):
        raise invalid(f"{where}: schema_version", version, "an integer ≥ 1", _FIX, cls=EncoderError)
    if version > SCHEMA_VERSION:
        raise invalid(f"{where}: schema_version", version, f"at most {SCHEMA_VERSION} (this latentdirs "
                      f"{__version__})", "Upgrade: pip install --upgrade latentdirs", cls=EncoderError)
    # the top level first: the nested records are only looked into once they are known to be objects
    for fields, owner, prefix in ((_HEADER_FIELDS, None, ""), (_GENERATOR_FIELDS, "generator", "generator."),
                                  (_ARCHITECTURE_FIELDS, "architecture", "architecture.")):
        record = meta if owner is None else meta[owner]
        for key, (check, allowed) in fields.items():
            if not check(record.get(key)):
                raise invalid(f"{where}: {prefix}{key}", _short(record.get(key)), allowed, _FIX, cls=EncoderError)
    bad_metric = next((k for k, v in meta["metrics"].items() if not (_is_number_or_null(v) or isinstance(v, (str, list)))),
                      None)
    if bad_metric is not None:
        raise invalid(f"{where}: metrics.{bad_metric}", _short(meta["metrics"][bad_metric]), "a number, null or text",
                      _FIX, cls=EncoderError)
    arch, shape = meta["architecture"], meta["latent_shape"]
    if arch["out_features"] != shape[0] * shape[1] or arch["num_classes"] != len(meta["classes"]) \
            or arch["max_channels"] < arch["base_channels"]:
        raise invalid(f"{where}: architecture", _short(arch), f"out_features = layers·dim of latent_shape {shape}, "
                      f"num_classes = {len(meta['classes'])} (the classes listed), max_channels ≥ base_channels",
                      _FIX, cls=EncoderError)
    return meta


def _short(value: Any) -> str:
    from latentdirs.errors import show

    return show(value, 80)


def _check_generator(path: Path, meta: dict[str, Any], generator: GeneratorAdapter, strict: bool) -> None:
    """The file was made for ``generator``: fingerprint (unless not ``strict``), resolution, space, shape, classes."""
    record = meta["generator"]
    actual = generator.fingerprint()
    if strict and record["fingerprint"] != actual:
        raise FingerprintMismatchError(
            f"encoder: {str(path)!r} was trained on {record['spec']!r} with fingerprint {record['fingerprint'][:19]}…, "
            f"but the generator {generator.spec!r} has {actual[:19]}…; allowed: the generator it was trained on. "
            "Train an encoder for these weights with 'latentdirs train-encoder', or pass strict=False")
    if meta["space"] not in generator.spaces:
        raise invalid("encoder", f"{path}: space {meta['space']!r}", f"a space of {generator.spec!r}: "
                      f"{', '.join(generator.spaces)}", "Train an encoder for this generator", cls=EncoderError)
    space = generator.spaces[meta["space"]]
    wanted = [space.num_layers, space.dim]
    checks = [("latent_shape", meta["latent_shape"], wanted),
              ("resolution", meta["architecture"]["resolution"], generator.resolution),
              ("classes", meta["classes"], list(generator.class_names))]
    for key, found, expected in checks:
        if found != expected:
            raise invalid("encoder", f"{path}: {key} {_short(found)}", f"{_short(expected)} (what {generator.spec!r} "
                          f"has in space {meta['space']!r})", "Train an encoder for this generator", cls=EncoderError)


__all__ = ["Architecture", "Encoder", "EncoderError", "EncoderNet", "HELDOUT_SEEDS", "augment_images",
           "heldout_metrics", "train_encoder"]
