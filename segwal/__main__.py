import sys

from segwal.cli import main

sys.exit(main())
