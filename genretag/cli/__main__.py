"""``python -m genretag.cli``: the same command as the ``genretag`` entry point."""

import sys

from genretag.cli.main import main

if __name__ == "__main__":  # importing the module (tools that walk packages) runs nothing
    sys.exit(main())
