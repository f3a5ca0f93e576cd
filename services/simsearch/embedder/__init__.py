"""The embedder service: micro-batcher, metrics, FastAPI app.

The models it runs (registry, engine, device placement) are in `simsearch.models`,
shared with the indexer.
"""
