"""segwal: a segmented write-ahead-log storage engine for Raft nodes.

The package is layered; imports go one way::

    segwal.engine  ->  segwal.index, segwal.wal  ->  segwal.errors, segwal.fs

``segwal`` itself holds only what every layer shares (the exception tree and
the file-system seam) and never imports a layer, so importing
``segwal.wal`` does not drag in the engine.
"""

__version__ = "0.1.0"
