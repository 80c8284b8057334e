"""plait's store: one LanceDB database of Arrow-typed tables with lineage.

Kept import-light on purpose (no lancedb at import time) so that ``fusion`` and ``heads``
can use :mod:`store.errors` and :mod:`store.registry` and stay free of I/O libraries.
"""
