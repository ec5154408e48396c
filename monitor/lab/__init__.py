"""The lab: far sites with real delay, jitter, loss and outages, to prove vcmon's numbers.

Sites live in a network namespace joined to the host by a veth pair, on addresses
from 198.18.0.0/15 (RFC 2544, used only by the lab); a user-space responder answers
their pings with each site's profile, because this kernel has no ``netem``.
"""
