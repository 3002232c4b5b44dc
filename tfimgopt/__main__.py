"""`python -m tfimgopt ...` is the `tfimgopt` command."""

import sys

from tfimgopt.cli import main

sys.exit(main())
