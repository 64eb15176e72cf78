"""What every stage shares: the user-facing error, TOML loading, paths, processes. Imports nothing else of bench."""
