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
