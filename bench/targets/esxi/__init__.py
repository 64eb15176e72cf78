"""The esxi target on VMware's Python SDK (pyvmomi): connection (TLS verified), deploy (the OVA through an import
lease), machine (budget, guestinfo settings, power, address, clean-up), perf (the hypervisor's view), target."""
