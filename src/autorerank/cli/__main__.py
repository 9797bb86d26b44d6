"""``python -m autorerank.cli``: the same as the ``autorerank`` console script."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
