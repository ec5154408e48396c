"""Probe kinds. Each kind is one module; ``KINDS`` is the only list of them."""
