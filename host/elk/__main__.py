"""`python -m elk`: the same entry as the `elk` command (elk.cli.main); nothing else."""

import sys

from elk.cli import main

sys.exit(main())
