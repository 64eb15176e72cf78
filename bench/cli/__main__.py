"""`python -m bench.cli`: the same as the `pacsbench` command."""

import sys

from bench.cli.main import main

sys.exit(main())
