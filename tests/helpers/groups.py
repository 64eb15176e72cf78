"""xdist groups (`make test` runs `pytest --dist loadgroup`): the tests of a group run on one worker, one at a time.

A test joins a group when it uses something of the whole host that a second test at the same
time would break or be broken by. A test belongs to one group at most: xdist makes a test of
two groups a group of its own, which would run beside both.
"""

from __future__ import annotations

import pytest

# QEMU guests (and the shared guest image, built by the first of them: guest_image), network
# namespaces (each takes the first /24 of 10.213.0.0/16 missing from the routing table: two made
# at once can take the same one, and a network-down fault takes its route away while it lasts),
# and the run whose cgroup budget and CPU-bound verdict a test asserts (tests/runs/test_budget_run.py).
HOST_RESOURCES = pytest.mark.xdist_group("host-resources")
