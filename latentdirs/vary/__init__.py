"""Content kept, style resampled: :func:`vary` and :func:`style_from` over a content/style split.

A :class:`~latentdirs.content_style.ContentStyleSplit` says which part of a latent is *content*
(structure) and which is *style* (appearance), and mixes two latents with
:meth:`~latentdirs.content_style.ContentStyleSplit.mix`. Here that is used two ways (MUNIT's
"multimodal" outputs and its style transfer, on a pretrained GAN):

* :func:`vary` — every source keeps its content and gets ``variations`` resampled styles. Column ``v``
  takes its style from the seed :func:`style_seeds` derives from ``(seed, v)``, the same for every
  source, so a column reads as one style across the rows;
* :func:`style_from` — every source's content with one reference's style (a seed, or one row of a
  latents file).

Sources are seeds or the rows of a latents file (``latentdirs invert``); rows with feature offsets keep
their offset, which belongs to the content. Everything is rendered in batches under
``torch.inference_mode``, and measured (:func:`measure`):

* ``diversity``: the mean pairwise RMS difference (images in [−1, 1]) between a source's variations;
* ``content_preservation``: the *edge correlation* of each variation with its source — the Pearson
  correlation of their blurred colour-gradient magnitudes (:func:`edge_similarity`; 1 = the same edges,
  wherever the colours went) — next to ``content_floor``, the same measure between the source and the
  style images themselves (what unrelated content scores);
* ``colour_diversity`` / ``style_distance``: distances of the per-channel mean and standard deviation
  of the images (the statistics AdaIN sets: :func:`latentdirs.content_style.layered.colour_statistics`,
  in [−1, 1] units), between variations, and for :func:`style_from` from each
  output to the reference (``style_distance_before``: from the source);
* on generators that read their images' factors (``read_factors``: the test-bed ``shapes-*``), the mean
  absolute change of every factor from the source, in the factor's units
  (:func:`latentdirs.evaluation.factors.factor_changes`), and for :func:`style_from` each factor's
  distance to the reference's; on generators that know their factor directions (``synthetic``, mixed
  in its own space), the largest change of each true factor coordinate ``a_f · z``.


Modules: :mod:`.core` (renders), :mod:`.measures` (figures), :mod:`.files` (what ``latentdirs vary`` writes).
"""

from __future__ import annotations

from latentdirs.vary.core import MAX_VARIATIONS, StyleReference, VaryResult, mix, style_from, style_seeds, vary, vary_shards
from latentdirs.vary.files import MANIFEST_SCHEMA, parse_reference, parse_sources, write_vary
from latentdirs.vary.measures import edge_map, edge_similarity, measure, summarise

__all__ = ["MANIFEST_SCHEMA", "MAX_VARIATIONS", "StyleReference", "VaryResult", "edge_map",
           "edge_similarity", "measure", "mix", "parse_reference", "parse_sources", "style_from", "style_seeds",
           "summarise", "vary", "vary_shards", "write_vary"]
