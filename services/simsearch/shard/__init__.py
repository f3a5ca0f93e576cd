"""A shard: loads its partitions (download, verify, mmap) and searches them."""
