"""`python -m server_under_test`: the archive (see --help), or `backup|restore` (see `backup --help`)."""

import sys

from server_under_test.backup_command import ACTIONS
from server_under_test.backup_command import main as backup_main
from server_under_test.server import main as serve_main

sys.exit(backup_main() if sys.argv[1:2] and sys.argv[1] in ACTIONS else serve_main())
