"""`python -m restore` is the command line (so `torchrun -m restore train ...` works)."""

import sys

from restore.cli import main

sys.exit(main())
