"""`python -m hbi_hf_cli` runs the `hbi-hf` command."""

import sys

from . import main

sys.exit(main())
