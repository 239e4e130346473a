"""``python -m latentdirs.cli`` runs the ``latentdirs`` command, so PyTorch's launcher can start it:
``torchrun --nproc-per-node N -m latentdirs.cli edit …`` (docs/scale.md)."""

from latentdirs.cli.main import main

if __name__ == "__main__":
    main()
