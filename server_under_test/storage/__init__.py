"""Where instances live: durable files on tiers, the SQLite index, tier migration, recycling at capacity.

No networking here.
"""
