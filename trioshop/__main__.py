"""``python -m trioshop`` is the ``trioshop`` command."""

import sys

from trioshop.cli import main

sys.exit(main())
