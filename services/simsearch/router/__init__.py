"""The router: shard discovery, query planning, fan-out/merge and the public search API."""
