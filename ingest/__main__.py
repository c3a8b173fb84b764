"""`python -m ingest` is the `cistern` command."""

import sys

from ingest.cli import main

sys.exit(main())
