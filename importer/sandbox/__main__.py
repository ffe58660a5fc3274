"""``python -m importer.sandbox [serve|dump] ...``"""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
