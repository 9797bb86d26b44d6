"""``python -m autorerank.server MODEL [flags]``: the ``serve`` command on its own."""

import sys

from .cli import main

sys.exit(main())
