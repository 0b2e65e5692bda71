"""segwal: a segmented write-ahead-log storage engine for Raft nodes.

The package is layered; imports go one way::

    segwal.engine  ->  segwal.index  ->  segwal.wal  ->  segwal.errors, segwal.fs

``segwal`` itself holds only what every layer shares (the exception tree and
the file-system seam) and never imports a layer, so importing
``segwal.wal`` does not drag in the engine.
"""

import os as _os

__version__ = "0.1.0"

# In a source checkout the layers live in folders beside this one (pyproject.toml
# maps segwal.wal -> wal/, ...).  When the checkout's root is first on sys.path
# (``python -m segwal`` or ``python -m pytest`` run there), this folder shadows the
# installed package, so look for the layers beside it too.  Installed copies have
# no pyproject.toml next to them and are unaffected.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isdir(_os.path.join(_root, "wal")):
    __path__.append(_root)
del _root
