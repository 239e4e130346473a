"""The library's version: one home, imported by the modules that record it (direction files, manifests)
and read by setup.cfg (``version = attr: latentdirs.version.__version__``).

A module of its own, so that recording the version never imports the package's ``__init__`` (and with
it the whole public API) from inside the layers it exports.
"""

__version__ = "0.1.0"
