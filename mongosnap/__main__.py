"""``python -m mongosnap``: the same as the ``mongosnap`` command."""

import sys

from .cli import main

sys.exit(main())
