"""The embedder service: model registry, device handling, micro-batcher, FastAPI app."""
