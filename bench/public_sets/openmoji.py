"""OpenMoji 17.0.0 (npm, CC-BY-SA 4.0): the demo's data set, through plait's own fetcher.

2,465 colour emoji without skin-tone variants; text = annotation + tags + openmoji_tags;
labels ``group`` (10 classes used) and ``subgroups``. One row per emoji, split 70/10/20 by
a hash of the code point (``mixed``).
"""
from __future__ import annotations

import json

from bench.public_sets.base import Dataset, group_split


def load() -> Dataset:
    from flows.openmoji import fetch

    package = fetch()
    entries = json.loads((package / "data" / "openmoji.json").read_text(encoding="utf-8"))
    ids, texts, images = [], [], []
    labels = {"group": [], "subgroups": []}
    for e in entries:
        if e.get("skintone") != "":
            continue
        ids.append(e["hexcode"])
        texts.append(". ".join(p for p in (e.get("annotation"), e.get("tags"), e.get("openmoji_tags")) if p))
        images.append(str(package / "color" / "svg" / f"{e['hexcode']}.svg"))
        labels["group"].append(e.get("group"))
        labels["subgroups"].append(e.get("subgroups"))
    return Dataset(name="openmoji", ids=ids, texts=texts, images=images, labels=labels, groups=list(ids),
                   licence="CC-BY-SA 4.0", splits={"mixed": group_split(ids)}, notes="openmoji@17.0.0, colour SVG")
