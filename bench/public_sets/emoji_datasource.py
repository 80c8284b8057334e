"""emoji-datasource 16.0.0 (npm, MIT data): 1,911 emoji with ``category`` (10 classes) and
``subcategory`` (99 classes), drawn by several vendors.

Images come from the per-vendor npm packages; only vendors whose artwork carries an open
licence are used: ``google`` (Noto Emoji, Apache-2.0) and ``twitter`` (Twemoji, CC-BY 4.0).
Apple's images are "not licensed for commercial usage" and Facebook's "have no clear
licensing" (the package README), so they are left out. 64 px PNGs, about 130 MB of tarballs.

Text = the Unicode name + short names (the same for every vendor). Because one emoji's
text is identical across vendors, every split groups rows by emoji: a test emoji's text
never appears in training under another vendor's image.

Splits (``Dataset.splits``):
- ``mixed``: both vendors (3,822 rows), emoji split 70/10/20 by a hash of the code point;
- ``style``: train+val on Google's drawings of the train/val emoji, test on Twitter's
  drawings of the test emoji (a shift in visual style, and no emoji seen in training).
"""
from __future__ import annotations

import json

import numpy as np

from bench.public_sets import npm
from bench.public_sets.base import Dataset, group_split

VERSION = "16.0.0"
VENDORS = ("google", "twitter")


def load() -> Dataset:
    meta = npm.fetch(f"emoji-datasource@{VERSION}", ("package/emoji.json", "package/LICENSE"))
    entries = json.loads((meta / "emoji.json").read_text(encoding="utf-8"))
    folders = {v: npm.fetch(f"emoji-datasource-{v}@{VERSION}", (f"package/img/{v}/64/", "package/LICENSE"))
               / "img" / v / "64" for v in VENDORS}
    ids, texts, images, groups, vendors = [], [], [], [], []
    labels = {"category": [], "subcategory": []}
    for e in entries:
        for v in VENDORS:
            path = folders[v] / e["image"]
            if not e.get(f"has_img_{v}") or not path.is_file():
                continue
            names = [n.replace("_", " ") for n in e.get("short_names") or []]
            text = ". ".join([(e.get("name") or "").lower()] + names)
            ids.append(f"{e['unified']}@{v}")
            texts.append(text)
            images.append(str(path))
            groups.append(e["unified"])
            vendors.append(v)
            labels["category"].append(e["category"])
            labels["subcategory"].append(e["subcategory"])
    parts = group_split(groups)
    vendor = np.array(vendors)
    style = np.where((parts != "test") & (vendor == "google"), parts,
                     np.where((parts == "test") & (vendor == "twitter"), "test", ""))
    return Dataset(name="emoji-datasource", ids=ids, texts=texts, images=images, labels=labels, groups=groups,
                   licence="data MIT; images Noto Emoji (Apache-2.0) and Twemoji (CC-BY 4.0)",
                   splits={"mixed": parts, "style": style},
                   notes=f"emoji-datasource@{VERSION}, vendors {', '.join(VENDORS)}, 64 px PNG")
