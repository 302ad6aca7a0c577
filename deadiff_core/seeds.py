"""Seeds derived from names and numbers, so that what a seed draws depends on what it is for, not on the
order things happen to run in (training steps, data pairs, rendered images)."""
import hashlib


def derived_seed(*parts):
    """A 63-bit seed from any values; stable across processes and Python runs."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1
