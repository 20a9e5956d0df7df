"""Fixtures come from neon-connect's own pytest plugin (``neon_local.pytest_plugin``: the
stand-in, ``neon_local``); shared values live in ``tests/constants.py`` and the subprocess
helper in ``tests/helpers.py``."""
