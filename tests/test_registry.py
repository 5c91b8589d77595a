import pytest

from imgclf.registry import Registry


def test_register_get_and_list():
    things = Registry("thing")

    @things.register("a")
    def make_a():
        return "A"

    assert things.get("a")() == "A"
    assert things.names() == ["a"]
    assert "a" in things


def test_unknown_name_lists_valid_names():
    things = Registry("thing")
    things.register("alpha")(lambda: None)
    with pytest.raises(KeyError, match="Unknown thing 'beta'. Valid things: alpha"):
        things.get("beta")


def test_duplicate_name_is_refused():
    things = Registry("thing")
    things.register("a")(lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        things.register("a")(lambda: None)
