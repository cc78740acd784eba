"""``python -m genretag``: the same command as the ``genretag`` entry point."""

import sys

from genretag.cli import main

sys.exit(main())
