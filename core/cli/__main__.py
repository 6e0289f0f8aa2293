"""``python -m core.cli``: the ``capsule`` command."""

from __future__ import annotations

import sys

from core.cli import main

sys.exit(main())
