"""Where instances live: durable files on tiers, the SQLite index, tier migration. No networking here."""
