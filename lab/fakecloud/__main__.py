"""`python -m lab.fakecloud ...` (see cli.py)."""

import sys

from lab.fakecloud.cli import main

sys.exit(main())
