"""The ``latentdirs`` command line (installed as ``latentdirs.cli``); the library never imports it."""
