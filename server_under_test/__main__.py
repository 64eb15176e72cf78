import sys

from server_under_test.server import main

sys.exit(main())
