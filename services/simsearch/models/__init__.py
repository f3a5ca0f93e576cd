"""The CNNs that turn images into vectors: model registry, embedding engine, device placement.

Not a service: both the embedder (online, one request's images) and the indexer (offline,
a whole collection: `index build` without `--embedder`) embed images, and their vectors must be
comparable, so both run this one code. It lives outside `embedder/` because services
never import each other. Every module here but this one imports torch: import them lazily
from code that also runs in the torch-free router and shard images (the CLI, the indexer).

* `registry` — which models exist, their preprocessing and where their weights come from;
* `engine` — preprocessing on the CPU, the batched forward pass on the device;
* `device` — which device and precision the model runs at.
"""

# The model the embedder serves and the indexer embeds with unless told otherwise: one
# value, since vectors of two models are not comparable. Here, not in `registry` (torch),
# so that settings classes can name it without importing torch.
DEFAULT_MODEL = "efficientnet-lite0"
