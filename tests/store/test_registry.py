import pytest

from store.errors import PlaitError, UnknownKey
from store.registry import Registry


def test_registry_returns_registered_class_when_key_known():
    reg = Registry("thing")

    @reg.register("my-thing")
    class MyThing:
        pass

    assert reg.get("my-thing") is MyThing
    assert reg.keys() == ["my-thing"]


def test_registry_raises_when_key_registered_twice():
    reg = Registry("thing")
    reg.register("a")(int)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(float)


def test_registry_lists_available_keys_when_key_unknown():
    reg = Registry("thing")
    reg.register("beta")(int)
    reg.register("alpha")(float)
    with pytest.raises(UnknownKey, match=r"Available: \['alpha', 'beta'\]") as info:
        reg.get("gamma")
    assert isinstance(info.value, KeyError) and isinstance(info.value, PlaitError)


def test_registry_rejects_key_when_not_kebab_case():
    with pytest.raises(ValueError, match="kebab-case"):
        Registry("thing").register("Not_Kebab")


def test_table_names_of_file_based_encoders_are_readable_and_old_names_are_kept(store):
    from store import encoder_tables, registries
    from store.schema import embedding_table_name

    name = embedding_table_name("image", "onnx:/models/clip/visual.onnx?modality=image&size=224", "abcdef0123")
    assert name.startswith("emb__image__onnx-visual-") and "models" not in name and len(name) < 50
    old = "emb__image__onnx-models-clip-visual-onnx-modality-image-size-224__abcdef01"  # the rule before
    registries.put(store, "encoders", {"id": old, "modality": "image", "spec": "onnx:/models/clip/visual.onnx",
                                       "dim": 4, "fingerprint": "abcdef0123", "weights_sha256": "w",
                                       "preprocess_sha256": "p", "config_json": "{}", "status": "active",
                                       "status_changed_at": None})
    assert encoder_tables.table_name(store, "image", "onnx:/models/clip/visual.onnx", "abcdef0123") == old
