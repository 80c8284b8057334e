"""Text query against a fused table: encode with the table's own encoder and fitted fusion.

A text query has no image, so the image block is masked exactly as fusion masks a missing
modality; the result says which blocks were used.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.encoders import build_encoder
from fusion import load_fusion
from store import encoder_tables, registries
from store.db import Store
from store.errors import MissingTable
from store.schema import FUSIONS
from store.search import SearchResult, knn


@dataclass(frozen=True)
class TextQuery:
    text: str
    fusion: str
    used: list[str]
    masked: list[str]
    result: SearchResult


class QueryEncoder:
    """Caches the text encoder and fitted fusion across several queries."""

    def __init__(self, store: Store, fusion: str):
        reg = registries.get(store, FUSIONS, fusion)
        if reg is None:
            raise MissingTable(f"fusion {fusion!r} has not been materialized", fix=f"run plait fuse {fusion}")
        self.store, self.fusion, self.table = store, fusion, reg["fused_table"]
        self.est = load_fusion(Path(reg["params_dir"]))
        self.text_encoder = None
        if "text" in self.est.modalities_:
            self.text_encoder = build_encoder(encoder_tables.active(store, "text")["spec"])

    def search_text(self, text: str, k: int = 5, item_columns: list[str] | None = None) -> TextQuery:
        blocks, masks = {}, {}
        for m in self.est.modalities_:
            if m == "text":
                blocks[m] = self.text_encoder.encode_text([text])
                masks[m] = np.ones(1, dtype=bool)
            else:
                blocks[m] = np.zeros((1, self.est.dims_[m]), dtype=np.float32)
                masks[m] = np.zeros(1, dtype=bool)
        if "text" not in self.est.modalities_:
            raise MissingTable(f"fusion {self.fusion!r} has no text block to query with text",
                               fix="query a fusion whose inputs include text")
        vector = self.est.transform(blocks, masks)[0]
        result = knn(self.store, self.table, vector, k, item_columns)
        used = [m for m in self.est.modalities_ if masks[m][0]]
        return TextQuery(text=text, fusion=self.fusion, used=used,
                         masked=[m for m in self.est.modalities_ if m not in used], result=result)
