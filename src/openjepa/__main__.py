"""``python -m openjepa`` (what ``torchrun -m openjepa ...`` runs)."""

import sys

from openjepa.cli import main

sys.exit(main())
