import pytest

from imgclf.config import Config, ConfigError, as_config, dump_config, load_config, load_yaml, with_options


def test_yaml_round_trip(tmp_path):
    cfg = with_options(Config(), model="mlp", hidden=(256, 128), epochs=3, image_size=(28, 28), seed=4)
    path = tmp_path / "exp.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert cfg.data.seed == cfg.train.seed == 4


def test_missing_keys_keep_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: 3\n")
    cfg = load_config(path)
    assert cfg.train.epochs == 3
    assert cfg.model.name == Config().model.name


@pytest.mark.parametrize("text, message", [
    ("data:\n  seed: -1\n", r"exp.yaml, section data: Invalid seed: expected an integer"),
    ("train:\n  epoch: 3\n", r"unknown key train\.epoch. Did you mean train.epochs\? Valid keys"),
    ("train:\n  lr: 0.01\n", r"unknown key train\.lr. Did you mean train.learning_rate\? Valid keys"),
    ("model: mlp\n", r"exp.yaml: model must be a mapping. Received: 'mlp'. Write it as a mapping of keys, e.g. "
                     r"`model: \{name: mlp\}`."),
    ("train:\n  epochs: 1\n  1: a\n  foo: b\n", r"exp.yaml: unknown key train.1. Valid keys under train"),
    ("train:\n  unfreeze: true\n", r"unfreeze.*all, none or a number of blocks K >= 1"),
    # YAML 1.1 reads this as 90, in base 60
    ("train:\n  epochs: 1:30\n", r"train.epochs must be of type int. Received: train.epochs='1:30'"),
])
def test_a_mistake_in_a_config_file_is_named_with_the_fix(tmp_path, text, message):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_section_left_empty_keeps_its_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n#  epochs: 3\nmodel:\n  name: mlp\n")
    cfg = load_config(path)
    assert (cfg.model.name, cfg.train) == ("mlp", Config().train)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"image_size": (0, 64)}, r"image_size=\(0, 64\)"),
        ({"val": 1.5}, r"val=1.5"),
        ({"epochs": 0}, r"epochs=0"),
        ({"epochs": 2**63}, r"a positive integer up to 1,000,000. Received: epochs=9223372036854775808"),
        ({"color_mode": "cmyk"}, r"color_mode='cmyk'"),
        ({"epochs": "ten"}, r"epochs='ten'"),
        ({"learning_rate": float("inf")}, r"learning_rate=inf"),
        ({"seed": -1}, r"an integer from 0 to 2\*\*32 - 1. Received: seed=-1"),
        ({"warmup_epochs": 3, "epochs": 3}, r"fewer than epochs=3"),
        ({"learning_rate": 1e308}, r"positive number up to 3.4e38.*learning_rate=1e\+308"),
        ({"weight_decay": float("inf")}, r"weight_decay=inf"),
        ({"fine_tune_lr": float("nan")}, r"fine_tune_lr=nan"),
    ],
)
def test_bad_values_name_the_received_value(options, message):
    with pytest.raises(ConfigError, match=message):
        with_options(Config(), **options)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ConfigError, match="epochs"):
        with_options(Config(), epoch=3)


def test_none_options_keep_the_base():
    base = with_options(Config(), epochs=7)
    assert with_options(base, epochs=None, model=None) == base


def test_yaml_takes_values_as_a_person_writes_them(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("data:\n  image_size: 28\ntrain:\n  learning_rate: 1e-3\n  weight_decay: 5e-4\n")
    cfg = load_config(path)
    assert cfg.data.image_size == (28, 28) and cfg.train.learning_rate == 0.001 and cfg.train.weight_decay == 0.0005
    path.write_text("data:\n  image_size: 48x64\n")
    assert load_config(path).data.image_size == (48, 64)
    path.write_text("train:\n  learning_rate: fast\n")
    with pytest.raises(ConfigError, match=r"learning_rate must be of type float. Received: train.learning_rate='fast'"):
        load_config(path)
    path.write_text("train:\n  patience: '3'\n  lr_factor: '0.5'\n")  # quoted numbers, ints and floats alike
    assert (load_config(path).train.patience, load_config(path).train.lr_factor) == (3, 0.5)
    path.write_text("train:\n  patience: '3.5'\n")
    with pytest.raises(ConfigError, match=r"patience must be of type int. Received: train.patience='3.5'"):
        load_config(path)


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: 3\n  learning_rate: 0.01\n  epochs: 30\n")
    with pytest.raises(ConfigError, match=r"exp.yaml is not valid YAML: the key 'epochs' is given twice \(lines 2 and 4\)"):
        load_config(path)
    # A key merged in with `<<` may be overridden.
    assert load_yaml("base: &b {epochs: 3}\ntrain:\n  <<: *b\n  epochs: 4\n")["train"] == {"epochs": 4}


def test_a_list_as_a_key_is_refused_as_yaml_with_its_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  ? [epochs, patience]\n  : 3\n")
    with pytest.raises(ConfigError, match=r"(?s)exp.yaml is not valid YAML: .*found unhashable key.*line 2"):
        load_config(path)


@pytest.mark.parametrize("config", [5, ["exp.yaml"]])
def test_a_config_of_another_type_is_refused_naming_what_is_accepted(tmp_path, config):
    import imgclf

    with pytest.raises(TypeError, match=r"config must be a Config, a dict of its sections or the path of a YAML "
                                        r"file. Received: config="):
        imgclf.train(tmp_path, out=tmp_path / "run", config=config)
    assert as_config({"train": {"epochs": 3}}).train.epochs == 3


def test_a_config_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_bytes("train:\n  epochs: 3 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"exp.yaml is not UTF-8 text .*Save it as UTF-8"):
        load_config(path)


def test_spaces_after_run_are_dropped_from_the_weights(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model:\n  weights: 'run:  runs/large '\n")
    assert load_config(path).model.weights == "run:runs/large"
    assert "weights: run:runs/large\n" in dump_config(load_config(path))


@pytest.mark.parametrize("option, suggestion", [("lr", "learning_rate"), ("epoch", "epochs"), ("batchsize", "batch_size")])
def test_an_unknown_option_suggests_the_keyword_meant(option, suggestion):
    with pytest.raises(ConfigError, match=rf"Unknown option '{option}'. Did you mean {suggestion}\? Valid options: "):
        with_options(Config(), **{option: 1})


def test_numbers_in_a_config_file_are_decimal(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  batch_size: 010\n  epochs: 1_000\n")  # YAML 1.1 reads 010 as octal: 8
    assert (load_config(path).train.batch_size, load_config(path).train.epochs) == (10, 1000)
