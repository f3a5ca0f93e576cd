"""Limits that more than one role enforces, declared once so that they cannot drift apart.

The router refuses a query over a limit (400, naming the setting) rather than send the
shards a request each of them would refuse; the shards enforce the same limit to bound
their memory; the wire model between them allows exactly this much. Each role's setting
defaults to the value here (`max_k` may be set lower, never higher).
"""

from __future__ import annotations

# The largest k·refine one query may ask for: the router refuses more (400) rather than
# send the shards a request each of them would refuse, and the shards bound their memory.
MAX_CANDIDATES = 20_000
# The largest k a query may ask for: the wire model between router and shards allows this
# much, so neither role's setting may go above it (each may be set lower).
MAX_K = 1000
