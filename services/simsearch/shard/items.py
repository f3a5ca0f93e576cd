"""`GET /items/{id}`: the stored path and exact vector of one image held here.

An id's partition is `id % P`, so one look-up in that partition's id table answers it;
without a version, the newest held version whose partition of the id is ready does.
"""

from __future__ import annotations

import numpy as np

from simsearch.common.errors import InvalidParameter, NotFound, PartitionsNotReady
from simsearch.common.ids import MAX_ID
from simsearch.common.wire import ShardItem, encode_array
from simsearch.shard.query import held_view
from simsearch.shard.settings import ShardSettings
from simsearch.shard.versions import Holdings, VersionView


def find_item(
    holdings: Holdings, settings: ShardSettings, id_: int, version: str | None
) -> ShardItem:
    """The item `id_` of `version` (newest held by default); 404 unknown, 409 not served."""
    if not 0 <= id_ <= MAX_ID:
        raise InvalidParameter(f"id {id_} is outside the id range 0..{MAX_ID}")
    views = [held_view(holdings, version, settings)] if version else holdings.views()[::-1]
    for view in views:
        item = _item_in(view, id_)
        if item is not None:
            return item
    where = f"version {version}" if version else "any loaded version"
    raise PartitionsNotReady(
        f"id {id_}'s partition is not ready on shard {settings.ordinal} in {where}"
    )


def _item_in(view: VersionView, id_: int) -> ShardItem | None:
    """The item from `view`, None when its partition is not ready there."""
    number = id_ % view.manifest.partitions
    served = view.ready.get(number)
    if served is None:
        return None
    features = served.partition.features
    try:
        row = int(features.rows_of(np.array([id_], dtype=np.int64))[0])
    except InvalidParameter:
        raise NotFound(f"no image with id {id_} in {view.version}") from None
    vector = np.asarray(features.vectors[row], np.float32)
    projected = view.index is not None and view.index.template.pretransform is not None
    return ShardItem(
        id=id_,
        version=view.version,
        partition=number,
        path=str(served.paths[row]),
        vector_b64=encode_array(vector, "<f4"),
        space="index" if projected else "model",
        dim=len(vector),
    )
