"""Synthetic DSA studies: profiles, pixels, the XA header, encoding, generation, the cached study pool, digests."""
