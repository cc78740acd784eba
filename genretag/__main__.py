"""``python -m genretag``: the same command as the ``genretag`` entry point."""

import sys

from genretag.cli import main

if __name__ == "__main__":  # importing the module (tools that walk packages) runs nothing
    sys.exit(main())
