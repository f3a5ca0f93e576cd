"""The router: shard discovery, query routing, fan-out/merge and the public search API."""
