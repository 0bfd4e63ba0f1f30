"""Simulacra for pytest suites: ``plugin`` is registered as a ``pytest11`` entry point, so
installing the package gives every suite the ``simulacra`` and ``simulacra_server``
fixtures."""
