"""The indexer: scan images → embed → train one template → write partitions → publish."""
