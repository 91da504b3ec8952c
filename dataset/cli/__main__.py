"""``python -m dataset.cli``: the ``matrix-pano`` command."""

import sys

from dataset.cli import main

sys.exit(main())
