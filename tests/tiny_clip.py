"""A tiny randomly initialised open_clip model saved as config + safetensors: no CLIP weights
can be installed here, so tests load this through the same spec users give
(``open_clip:local-dir:FOLDER``)."""
import json
from pathlib import Path

TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def save_tiny_clip(folder: Path, seed: int = 0):
    """Write the model into ``folder``; returns the reference model (same weights)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    model = open_clip.create_model("local-dir:" + str(folder))  # no weights yet: random init
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return model
