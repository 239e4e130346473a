"""The generator adapter: one interface over every family of pretrained generator.

An adapter *holds* a network (composition, not ``nn.Module`` inheritance) and exposes what the
discovery methods and the editor need: named latent spaces, seeded sampling, differentiable
synthesis, the latent projection weights for SeFa, and a fingerprint of the weights.

Conventions (every adapter, checked by ``tests/contract.py``):

* latents of a single-layer space are ``[N, D]``; of a layered space (``w+``, BigGAN per-block)
  ``[N, L, D]``;
* images are float32 ``[N, 3, H, W]`` in about ``[-1, 1]``, on the adapter's device, differentiable
  with respect to the latents;
* ``sample(n, seed=s)`` is the same on every device and every run, and ``sample_seeds([s])`` gives
  seed ``s`` the same latent whatever batch it is drawn in.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch
from torch import nn

from latentdirs.devices import resolve_device
from latentdirs.errors import NotSupportedError, OutOfRangeError, UnknownNameError, invalid, describe_allowed

#: a class given as one id or name for all latents, one per latent, a LongTensor [N], or None
ClassSpec = Union[int, str, Sequence[Union[int, str]], torch.Tensor, None]


@dataclass(frozen=True)
class LatentSpace:
    """A latent space an adapter offers: ``name``, per-layer dimension ``dim``, ``num_layers`` (1 = flat)."""

    name: str
    dim: int
    num_layers: int = 1

    @property
    def layered(self) -> bool:
        return self.num_layers > 1

    def shape(self, n: int) -> tuple[int, ...]:
        return (n, self.num_layers, self.dim) if self.layered else (n, self.dim)


class GeneratorAdapter(abc.ABC):
    """Base class of all generator adapters.

    Subclasses set ``family``, ``spec``, ``resolution``, ``spaces`` (first = default), ``class_names``
    (empty for unconditional nets), hold the network in ``self.network`` (eval mode, frozen), and
    implement :meth:`_sample_z` only if their prior is not N(0, I), :meth:`_synthesize`, and optionally
    :meth:`to_space`, :meth:`projection_weights`.

    Every hook a discovery method or the evaluation reads is declared here with its default
    (:attr:`projection_layers`, :meth:`projection_weights`, :meth:`sefa_space`, :attr:`true_directions`,
    :meth:`read_factors`);
    nothing outside the adapters reads an attribute this class does not declare.
    """

    family: str = ""
    network: nn.Module
    #: the options :func:`~latentdirs.registry.load_generator` passed to the family's loader (JSON-able);
    #: :meth:`describe` records them, so a file made with this adapter reloads it the same way
    load_options: dict[str, Any]

    def __init__(self, *, spec: str, network: nn.Module, spaces: Sequence[LatentSpace], resolution: int,
                 class_names: Sequence[str] = (), device: str | torch.device = "auto") -> None:
        if not spaces:
            raise ValueError("an adapter needs at least one latent space")
        self.spec = spec
        self.device = resolve_device(device)
        self.network = network.eval().requires_grad_(False).to(self.device)
        self.spaces: dict[str, LatentSpace] = {s.name: s for s in spaces}
        self.default_space = spaces[0].name
        self.resolution = int(resolution)
        self.class_names: tuple[str, ...] = tuple(class_names)
        self._fingerprint: str | None = None
        self.load_options = {}  # set by the registry after loading; an adapter built directly has none
        #: where the weights came from when the spec names a path: the path as given, its absolute form
        #: and the sha256 of the file(s) — set by the registry; lets a reload find a file from another
        #: working directory, and tells a moved checkpoint apart from another one
        self.source: dict[str, Any] | None = None

    # ------------------------------------------------------------------ identity
    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def z_dim(self) -> int:
        return self.spaces["z"].dim

    def fingerprint(self) -> str:
        """A stable hash of the weights (names, dtypes, shapes, bytes): ``"sha256:<hex>"``.

        It depends on the values only, not on the file format the weights came from or the device.
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.network.state_dict().items()):
                data = tensor.detach().to("cpu").contiguous().reshape(-1)
                digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
                digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
            self._fingerprint = "sha256:" + digest.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """JSON-able identity of the generator, stored in direction files and manifests.

        ``options`` are the loader options it was loaded with (:attr:`load_options`, ``{}`` for none):
        with ``spec`` they reload it (:func:`~latentdirs.registry.generator_from_record`).
        """
        return {
            "spec": self.spec,
            "options": dict(self.load_options),
            "family": self.family,
            "fingerprint": self.fingerprint(),
            "resolution": self.resolution,
            "spaces": {name: {"dim": s.dim, "num_layers": s.num_layers} for name, s in self.spaces.items()},
            "classes": list(self.class_names),
            **({"source": dict(self.source)} if self.source else {}),
        }

    # ------------------------------------------------------------------ spaces and classes
    def space(self, name: str | None) -> LatentSpace:
        """The :class:`LatentSpace` called ``name`` (``None`` = the default space)."""
        if name is None:
            return self.spaces[self.default_space]
        if name not in self.spaces:
            raise invalid("space", name, f"{describe_allowed(self.spaces)} (the spaces {self.spec} offers)",
                          cls=UnknownNameError)
        return self.spaces[name]

    def resolve_class(self, value: int | str | None) -> int | None:
        """Turn a class name or id into an id; ``None`` picks class 0 for a conditional generator.

        Unconditional generators accept only ``None``.
        """
        if not self.conditional:
            if value is None:
                return None
            raise invalid("class", value, "none: this generator is unconditional", "Drop --class")
        if value is None:
            return 0
        if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
            lowered = value.strip().lower()
            if lowered in self.class_names:
                return self.class_names.index(lowered)
            raise invalid("class", value, f"{describe_allowed(self.class_names)} or ids 0-{self.num_classes - 1}",
                          cls=UnknownNameError)
        index = int(value)
        if not 0 <= index < self.num_classes:
            raise invalid("class", value, f"ids 0-{self.num_classes - 1} or names {describe_allowed(self.class_names)}",
                          cls=OutOfRangeError)
        return index

    def class_tensor(self, classes: ClassSpec, n: int) -> torch.Tensor | None:
        """Class ids as a LongTensor ``[n]`` on the device, or ``None`` for unconditional nets."""
        if not self.conditional:
            if classes is not None:
                raise invalid("class", classes, "none: this generator is unconditional", "Drop --class")
            return None
        if isinstance(classes, torch.Tensor):
            ids = classes.to(torch.long).flatten()
        elif isinstance(classes, (list, tuple)):
            ids = torch.tensor([self.resolve_class(c) for c in classes], dtype=torch.long)
        else:
            ids = torch.full((n,), self.resolve_class(classes), dtype=torch.long)
        if ids.numel() == 1 and n != 1:
            ids = ids.expand(n)
        if ids.numel() != n:
            raise invalid("classes", f"{ids.numel()} ids", f"one id or {n} ids (one per latent)")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_classes):
            raise invalid("classes", ids, f"ids 0-{self.num_classes - 1}", cls=OutOfRangeError)
        return ids.to(self.device)

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, *, seed: int | None = None, space: str | None = None,
               truncation: float | None = None, classes: ClassSpec = None) -> torch.Tensor:
        """Draw ``n`` latents in ``space`` (default: the default space), deterministic for ``seed``.

        z is drawn on the CPU from a seeded ``torch.Generator`` (identical on every device), then mapped
        to ``space``. Truncation ψ ∈ (0, 1] is applied where the family applies it (DCGAN: z scaled by
        ψ here; BigGAN: ψ·truncated normal here, and ψ again in :meth:`synthesize`; StyleGAN: in the
        mapping to w). The rule every family keeps: ``synthesize(sample(…, truncation=ψ),
        truncation=ψ)`` renders the truncated image. Returns ``[n, D]`` or ``[n, L, D]`` on the device.
        """
        if n < 0:
            raise invalid("n", n, "a non-negative number of latents")
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        z = self._sample_z(n, generator, self.check_truncation(truncation)).to(self.device)
        target = self.space(space).name
        return z if target == "z" else self.to_space(z, "z", target, truncation=truncation, classes=classes)

    def sample_seeds(self, seeds: Sequence[int], *, space: str | None = None,
                     truncation: float | None = None, classes: ClassSpec = None) -> torch.Tensor:
        """One latent per seed, each drawn alone, so a seed's latent never depends on its batch."""
        target = self.space(space)
        if not seeds:
            return torch.empty(target.shape(0), device=self.device)
        z = torch.cat([self.sample(1, seed=s, space="z", truncation=truncation) for s in seeds])
        return z if target.name == "z" else self.to_space(z, "z", target.name, truncation=truncation,
                                                          classes=classes)

    def check_truncation(self, truncation: float | None) -> float | None:
        """Validate ψ; ``None`` and 1 both mean "no truncation". Families may snap or refuse more."""
        if truncation is None:
            return None
        value = float(truncation)
        if not 0.0 < value <= 1.0:
            raise invalid("truncation", truncation, "a number in (0, 1]", "Use e.g. --truncation 0.7")
        return value

    def _sample_z(self, n: int, generator: torch.Generator | None, truncation: float | None) -> torch.Tensor:
        """Prior sample ``[n, z_dim]`` on the CPU. Default: N(0, I), shrunk by ψ towards the mean 0."""
        z = torch.randn(n, self.z_dim, generator=generator)
        return z * truncation if truncation is not None else z

    def to_space(self, latents: torch.Tensor, src: str, dst: str, *, truncation: float | None = None,
                 classes: ClassSpec = None) -> torch.Tensor:
        """Map latents from space ``src`` to ``dst`` (e.g. z → w → w+). Identity when equal.

        ``classes`` matter where the mapping is conditional (class-conditional StyleGAN2).
        """
        self.space(src), self.space(dst)
        if src == dst:
            return latents
        raise NotSupportedError(f"to_space: {self.spec} cannot map {src!r} to {dst!r}")

    # ------------------------------------------------------------------ synthesis
    def synthesize(self, latents: torch.Tensor, *, space: str | None = None, classes: ClassSpec = None,
                   truncation: float | None = None, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Render latents ``[N, D]`` / ``[N, L, D]`` of ``space`` → float32 ``[N, 3, H, W]`` in about [-1, 1].

        ``classes``: one id/name for all, or one per latent (conditional generators; default class 0).
        ``truncation``: the ψ the latents were sampled with, for families whose forward needs it.
        ``offsets``: feature offsets ``[N, *feature_offset_shape]`` added to the output of the first
        layer (:attr:`feature_offset_shape`; latents of ``z`` only; refused where it is None).
        Differentiable with respect to ``latents`` (and ``offsets``); wrap in ``torch.no_grad()`` when
        rendering only.
        """
        target = self.space(space)
        latents = latents.to(self.device, torch.float32)
        if tuple(latents.shape[1:]) != target.shape(0)[1:]:
            raise invalid("latents", f"shape {tuple(latents.shape)}",
                          f"shape {('N',) + target.shape(0)[1:]} for space {target.name!r}")
        ids = self.class_tensor(classes, latents.shape[0])
        if offsets is None:
            return self._synthesize(latents, target.name, ids, self.check_truncation(truncation))
        shape = self.feature_offset_shape
        if shape is None or target.name != "z":
            raise invalid("offsets", f"a tensor {tuple(offsets.shape)}", f"None for space {target.name!r} of "
                          f"{self.spec!r} (feature offsets exist in z of DCGAN-family generators)",
                          "Drop the offsets (invert with --no-feature-offset)", cls=NotSupportedError)
        if tuple(offsets.shape) != (latents.shape[0], *shape):
            raise invalid("offsets", f"shape {tuple(offsets.shape)}", f"shape {(latents.shape[0], *shape)}: "
                          f"one offset {shape} per latent")
        offsets = offsets.to(self.device, torch.float32)
        return self._synthesize_with_offsets(latents, ids, self.check_truncation(truncation), offsets)

    @abc.abstractmethod
    def _synthesize(self, latents: torch.Tensor, space: str, classes: torch.Tensor | None,
                    truncation: float | None) -> torch.Tensor:
        """Family-specific rendering; inputs already validated and on the device."""

    @property
    def feature_offset_shape(self) -> tuple[int, ...] | None:
        """Per-row shape ``(C, H, W)`` of the *feature offset* :meth:`synthesize` can add to the output of
        the network's first layer, or None (the default): not supported.

        A family sets it only where that first layer is affine in the latent (DCGAN: a ConvTranspose2d
        with its BatchNorm folded in), so a z edit ``G(z + αd; r) = rest(first(z + αd) + r)`` moves the
        image exactly as it moves ``G(z + αd)``: the offset is a constant in pre-activation space, and
        every z direction applies unchanged. Inversion optimises it (docs/inversion.md, "Feature offset").
        """
        return None

    def _synthesize_with_offsets(self, latents: torch.Tensor, classes: torch.Tensor | None,
                                 truncation: float | None, offsets: torch.Tensor) -> torch.Tensor:
        """Render z ``latents [N, D]`` with ``offsets [N, *feature_offset_shape]`` added after the first
        layer; inputs validated and on the device. Families with a :attr:`feature_offset_shape` override it."""
        raise NotSupportedError(f"{self.spec} cannot render feature offsets")

    # ------------------------------------------------------------------ SeFa support
    @property
    def projection_layers(self) -> tuple[str, ...]:
        """Names of the layers :meth:`projection_weights` can select (by index); one entry = no choice."""
        return ("input",)

    def projection_weights(self, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Weights that map the latent into the network, as float32 CPU matrices ``[D, outputs_l]``.

        One matrix per selected layer (``layers`` indexes :attr:`projection_layers`; ``None`` = the
        family's default). Columns are output units, rows are latent coordinates.
        """
        raise NotSupportedError(
            f"{self.spec} exposes no latent projection weights, so closed-form SeFa cannot run on it; "
            "use a learned method (e.g. -m orojar) instead")

    def sefa_space(self, layers: Sequence[int] | None) -> str:
        """The latent space :meth:`projection_weights` ``(layers)`` acts on: SeFa's directions live there.

        ``layers``: the validated projection-layer indices, or ``None`` for the family's default.
        Default: :attr:`default_space`. Layered families override it (StyleGAN2: ``"w+"``; BigGAN:
        ``"z"`` for the default layer, ``"blocks"`` for chosen ones).
        """
        return self.default_space

    # ------------------------------------------------------------------ evaluation support
    @property
    def true_directions(self) -> dict[str, torch.Tensor] | None:
        """Known factor directions, for ground-truth scores: factor name → unit vector ``[D]`` (CPU
        float32) in the default space. ``None`` (the default) for generators whose factors nobody knows;
        the ``synthetic`` family has them by construction."""
        return None

    def read_factors(self, images: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The scene factors an image shows, read by a model of the generator's data, for ground-truth
        scores on *learned* generators: ``images [N, 3, R, R]`` in [-1, 1] → ``{factor: [N]}`` on the CPU
        (the testbed's units, :mod:`latentdirs.scenes`), or ``None`` (the default) for generators whose
        images nobody can read. The ``shapes-*`` generators read them with the factor reader
        (:func:`latentdirs.factor_reader.scene_factor_reader`)."""
        return None

    def check_layers(self, layers: Sequence[int] | None, *, param: str = "layers") -> list[int] | None:
        """Validate layer indices against :attr:`projection_layers`."""
        if layers is None:
            return None
        count = len(self.projection_layers)
        bad = [i for i in layers if not 0 <= i < count]
        if bad or not layers:
            raise invalid(param, list(layers), f"indices 0-{count - 1} of {describe_allowed(self.projection_layers)}",
                          cls=OutOfRangeError)
        return list(layers)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} {self.resolution}px on {self.device}>"
