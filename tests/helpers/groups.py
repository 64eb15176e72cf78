"""xdist groups (`make test` runs `pytest --dist loadgroup`): the tests of a group run on one worker, one at a time.

A test joins a group when it uses something of the whole host that a second test at the same
time would break or be broken by. A test belongs to one group at most: xdist makes a test of
two groups a group of its own, which would run beside both.

Network namespaces and cgroups need no group: bench.common.netns chooses and takes a subnet under
a host-wide lock (the address of a downed veth counts as taken), namespaces, veths and cgroups are
named after the process or run that made them, and the tests look for leftovers by those names.
"""

from __future__ import annotations

import pytest

# QEMU guests under TCG keep the host's cores busy while they boot: two lanes of guests, never more.
# Two guests at once took 129 s where one after the other took about 146 s (a power-loss run
# and a guest store, measured on this 2-core host), and a power-loss run spends most of its time
# in a load that waits on the guest, not in the CPU. GUESTS: the guests of tests/targets/test_vm.py
# (they share the session's accelerator probe, whose folder one of them looks for) and the short
# power-loss run; LONG_GUESTS: the two power-loss runs of about four minutes each.
GUESTS = pytest.mark.xdist_group("guests")
LONG_GUESTS = pytest.mark.xdist_group("long-guests")
# The lanes start first (tests/conftest.py): they are the longest units of work of the session.
LANES = ("long-guests", "guests")
