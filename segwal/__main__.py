"""``python -m segwal``: the ``segwal`` command line."""

import sys

from segwal.cli import main

sys.exit(main())
