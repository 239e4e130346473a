"""Catalogue of known checkpoints and curated direction files (installed as ``latentdirs.checkpoints``)."""
