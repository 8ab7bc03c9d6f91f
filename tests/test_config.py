import copy
import re
import tomllib
from pathlib import Path

import pytest

from forecaster.config import Config, active_dims, config_from_dict, config_toml, load_config
from forecaster.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_toml_lists_exactly_the_built_in_defaults():
    with open(ROOT / "configs" / "default.toml", "rb") as f:
        tree = tomllib.load(f)
    assert Config.model_validate(tree) == Config()

    # every key of every section and table is written out ([tune.space] included: a dimension
    # missing there is still searched, and the file would not say so)
    def keys(table: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in table.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    built_in = {k for k in keys(Config().model_dump(mode="json")) if "." in k}  # run_dir: no TOML null
    assert keys(tree) == built_in


@pytest.mark.parametrize("name", ["demo.toml", "smoke.toml", "default.toml"])
def test_shipped_configs_validate(name):
    load_config(ROOT / "configs" / name)


def test_precedence_flags_over_file_over_defaults(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[train]\nepochs = 7\nlr = 0.01\n[model]\ncell = "gru"\n')
    cfg = load_config(cfg_file, {"train.epochs": 3, "train.seed": None})
    assert cfg.train.epochs == 3  # flag wins
    assert cfg.train.lr == 0.01  # file wins over default
    assert cfg.model.cell == "gru"
    assert cfg.train.seed == Config().train.seed  # None override is ignored
    assert cfg.train.batch_size == Config().train.batch_size


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[train]\nepochz = 3\n", "train.epochz: unknown key"),
        ("[trian]\nepochs = 3\n", "trian: unknown key"),
        ('[train]\nepochs = "many"\n', "train.epochs"),
        ("[model]\nhidden_size = 0\n", "model.hidden_size"),
        ("[model]\nhidden_size = -4\n", "model.hidden_size"),
        (
            "[window]\nlookback = 5\nhorizon = 10\n",
            "horizon (10) must not exceed window.lookback (5): use a horizon of at most 5 (--horizon), "
            "or a lookback of 10 or more (--lookback)",
        ),
        ('[model]\ncell = "transformer"\n', "model.cell"),
        ("[model]\nquantiles = [0.9, 0.1]\n", "model.quantiles"),
        # other levels would silently mislabel the p10 / p90 columns: refused, with the reason
        ("[model]\nquantiles = [0.05, 0.5, 0.95]\n", "model.quantiles: only [0.1, 0.5, 0.9]"),
        ("[intervals]\nvol_halflife = 0\n", "intervals.vol_halflife"),
        ("[intervals]\ntracking_rate = -1\n", "intervals.tracking_rate"),
        ('[intervals]\nstep_tracking = "each"\n', "intervals.step_tracking"),
        ("[train]\nbatch_size = 0\n", "train.batch_size"),
        # an infinite weight decay turns every weight into nan at the first step
        ("[train]\nweight_decay = inf\n", "train.weight_decay: expected a finite number, not inf"),
        # an infinite clip was taken (no clipping), and run.json then held Infinity, which is no JSON
        ("[train]\ngrad_clip = inf\n", "train.grad_clip: expected a finite number, not inf"),
        ("[tune]\ntimeout = inf\n", "tune.timeout: expected a finite number, not inf"),
        ("not toml at all ===", "not valid TOML"),
    ],
)
def test_bad_config_is_a_one_line_error_naming_the_key(tmp_path, text, fragment):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_config_file_not_utf8_is_a_config_error_naming_the_file(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes('[data]\ntickers = ["AAA"]  # caf\u00e9\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "UTF-8" in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match='config file "" names no file'):  # it read the current folder
        load_config("")


def test_tickers_may_be_one_string_as_the_command_line_takes_them(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('[data]\ntickers = "aaa, BBB ccc"\n')
    assert load_config(p).data.tickers == ["aaa", "BBB", "ccc"]
    assert load_config(None, {"data.tickers": "AAA,BBB"}).data.tickers == ["AAA", "BBB"]


def test_a_section_or_a_check_across_keys_is_traced_to_where_it_came_from(tmp_path):
    """An option naming an unknown section was blamed on the file; a check across keys of the
    file on the options too, when the only option given was another key (--run-dir)."""
    p = tmp_path / "h30.toml"
    p.write_text("[window]\nhorizon = 30\nlookback = 20\n")
    with pytest.raises(ConfigError) as section:
        load_config(p, {"foo.bar": 1})
    assert str(section.value) == "invalid configuration (options): foo: unknown key"
    with pytest.raises(ConfigError) as file:
        load_config(p, {"run_dir": "runs/x"})
    assert str(file.value).startswith(f"invalid configuration ({p}): window.horizon (30) must not exceed")
    with pytest.raises(ConfigError) as both:
        load_config(p, {"window.horizon": 30})
    assert str(both.value).startswith(f"invalid configuration ({p} and options): window.horizon (30)")


def test_a_bad_value_is_traced_to_where_it_came_from(tmp_path):
    p = tmp_path / "ok.toml"
    p.write_text("[window]\nlookback = 20\n\n[train]\nepochs = 2\n")
    with pytest.raises(ConfigError) as flag:
        load_config(p, {"window.lookback": 3000})
    assert str(flag.value).startswith("invalid configuration (options): window.lookback")
    p.write_text("[window]\nlookback = 0\n")
    with pytest.raises(ConfigError) as both:
        load_config(p, {"train.epochs": 0})
    assert str(both.value).startswith(f"invalid configuration ({p} and options): ")
    with pytest.raises(ConfigError) as file:
        load_config(p, {"train.epochs": 3})
    assert str(file.value).startswith(f"invalid configuration ({p}): window.lookback")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[train]\nepochs = true\n", "train.epochs: expected a whole number, not true"),
        ('[window]\nlookback = "60"\n', 'window.lookback: expected a whole number, not "60"'),
        ('[model]\ndropout = "0.2"\n', 'model.dropout: expected a number, not "0.2"'),
        ('[tune]\nprune = "no"\n', 'tune.prune: expected true or false, not "no"'),
        ("[tune]\nprune = 0\n", "tune.prune: expected true or false, not 0"),
        ("[tune.space]\nhidden_size = [8, true]\n", "tune.space.hidden_size: expected a whole number"),
        # a float where a whole number is meant: 3.0 is not quietly 3, nor 2.5 refused in other words
        ("[window]\nhorizon = 3.0\n", "window.horizon: expected a whole number, not 3.0"),
        ("[window]\nhorizon = 2.5\n", "window.horizon: expected a whole number, not 2.5"),
        ("[train]\nepochs = 3.0\n", "train.epochs: expected a whole number, not 3.0"),
        ("[tune]\ntrials = 1e3\n", "tune.trials: expected a whole number, not 1000.0"),
        ("[tune.space]\nlookback = [20.0, 60]\n", "tune.space.lookback: expected a whole number, not 20.0"),
        # a folder or a table given another kind of value: what was expected, no Python class names
        ("run_dir = 3\n", "run_dir: expected a folder name in quotes, not 3"),
        ("[data]\ndata_dir = true\n", "data.data_dir: expected a folder name in quotes, not true"),
        ('[predict]\nout = ["fc"]\n', 'predict.out: expected a folder name in quotes, not ["fc"]'),
        ("[data]\ndata_dir = 2024-07-03\n", "data.data_dir: expected a folder name in quotes, not 2024-07-03"),
        (
            "[predict]\nout = 2024-07-03T10:00:00\n",
            "predict.out: expected a folder name in quotes, not 2024-07-03T10:00:00",
        ),
        ("[tune]\nspace = 3\n", "tune.space: expected a table (a [section] header with its keys below it), not 3"),
        # nan compares false with every bound, which pydantic reported as the bound broken
        ("[train]\nlr = nan\n", "train.lr: expected a number, not nan"),
        ("[model]\ndropout = -nan\n", "model.dropout: expected a number, not nan"),
        ("[tune.space]\nlr = [1e-4, nan]\n", "tune.space.lr: expected a number, not nan"),
        # what pydantic said in its own words ("Input should be a valid integer"), in the file's
        ("[train]\nepochs = 1979-05-27\n", "train.epochs: expected a whole number, not 1979-05-27"),
        ("[train]\nlr = 1979-05-27\n", "train.lr: expected a number, not 1979-05-27"),
        ("[data]\ncalendar = 5\n", "data.calendar: expected text in quotes, not 5"),
        ('[data]\ntickers = ["AAA", 5]\n', "data.tickers.1: expected text in quotes, not 5"),
        ('[tune.space]\ncell = "rnn"\n', 'tune.space.cell: expected a list in brackets, such as [1, 2], not "rnn"'),
        ("[train]\nepochs = 0\n", "train.epochs: must be greater than 0, not 0"),
    ],
)
def test_a_value_of_another_kind_is_refused_not_converted(tmp_path, text, fragment):
    """`epochs = true` is not one epoch, nor `prune = "no"` false: a wrong type is an error
    (configs/default.toml says so), which names the key and the value as written."""
    p = tmp_path / "kind.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert fragment in str(e.value)


def test_a_whole_number_where_a_number_is_meant_is_kept(tmp_path):
    p = tmp_path / "ok.toml"
    p.write_text("[train]\nlr = 1\n[model]\ndropout = 0\n[tune]\ntimeout = 5\n[tune.space]\ndropout = [0, 1e-1]\n")
    cfg = load_config(p)
    assert (cfg.train.lr, cfg.model.dropout, cfg.tune.timeout) == (1.0, 0.0, 5.0)
    assert cfg.tune.space.dropout == [0.0, 0.1]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[train]\ntickers = ["AAA"]\n', "train.tickers: unknown key here (tickers belongs in [data])"),
        ("epochs = 3\n", "epochs: unknown key here (epochs belongs in [train])"),
        # a top-level key written below a section header is read as that section's
        (
            '[train]\nepochs = 3\nrun_dir = "runs/x"\n',
            "train.run_dir: unknown key here (run_dir belongs at the top of the file, before the first [section])",
        ),
        ("[data]\nbogus = 1\n", "data.bogus: unknown key"),
        # a range under [tune] was meant for the search space
        (
            "[tune]\nlookback = [20, 60]\n",
            "tune.lookback: unknown key here (lookback belongs in [window] or [tune.space] (a search range))",
        ),
    ],
)
def test_a_key_in_the_wrong_section_says_where_it_belongs(tmp_path, text, message):
    p = tmp_path / "misplaced.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"invalid configuration ({p}): {message}"


def test_a_config_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Notepad and other Windows editors may start a UTF-8 file with a BOM; it is not taken for
    a bad first line ("not valid TOML ... at line 1, column 1")."""
    p = tmp_path / "bom.toml"
    p.write_bytes(b'\xef\xbb\xbf[train]\nepochs = 3\n[data]\ntickers = ["AAA"]\n')
    cfg = load_config(p)
    assert cfg.train.epochs == 3 and cfg.data.tickers == ["AAA"]


@pytest.mark.parametrize("flags", [None, {"data.tickers": ["AAA"]}])
def test_a_section_written_as_a_value_is_named_as_such(tmp_path, flags):
    """`data = "prices"` (meant as the data folder) is a section given a value: the error says
    so, names the file, and is the same whether or not a flag sets a key of that section."""
    p = tmp_path / "flat.toml"
    p.write_text('data = "prices"\n')
    with pytest.raises(ConfigError) as e:
        load_config(p, flags)
    assert str(e.value) == (
        f'invalid configuration ({p}): data = "prices": data is a section, '
        "written [data] on a line of its own with its keys below it"
    )


def test_a_folder_starting_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    """`data_dir = "~/stocks"` in a config file (or `--out=~/fc`, which no shell expands) is
    the home folder's stocks, as in a shell, not a folder named ~ in the current directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    conf = tmp_path / "c.toml"
    conf.write_text('run_dir = "~/runs/r"\n[data]\ndata_dir = "~/stocks"\n[predict]\nout = "~/fc"\n')
    cfg = load_config(conf)
    home = tmp_path / "home"
    assert (cfg.data.data_dir, cfg.run_dir, cfg.predict.out) == (home / "stocks", home / "runs" / "r", home / "fc")
    assert load_config(None, {"data.data_dir": "a~b"}).data.data_dir == Path("a~b")  # only a leading ~


def test_a_check_across_keys_reads_as_one_sentence_without_the_validator_s_prefixes(tmp_path):
    """A check that spans keys names them itself: no "config: Value error, " before it."""
    p = tmp_path / "bad.toml"
    p.write_text("[window]\nlookback = 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"invalid configuration ({p}): window.lookback (2) must be at least model.ar_order")


def test_a_lookback_below_ar_order_says_what_to_change_in_the_user_s_terms(tmp_path):
    """No train flag sets ar_order: `--lookback 2` is refused saying the lookback must be at least
    ar_order and what ar_order is, that a longer lookback or a lower ar_order in a config file
    settles it, where it said "model.ar_order (5) must not exceed window.lookback (2)"."""
    with pytest.raises(ConfigError) as e:
        load_config(None, {"window.lookback": 2, "window.horizon": 2})
    message = str(e.value)
    assert message.startswith(
        "invalid configuration (options): window.lookback (2) must be at least model.ar_order (5)"
    )
    for words in (
        "past returns",
        "autoregressive term",
        "a lookback of 5 or more (--lookback)",
        "at most 2",
        "[model]",
    ):
        assert words in message, words
    p = tmp_path / "ar.toml"
    p.write_text("[model]\nar_order = 2\n")  # the way out the message names
    assert load_config(p, {"window.lookback": 2, "window.horizon": 2}).window.lookback == 2


def test_a_seed_torch_cannot_take_is_a_config_error_not_a_crash(tmp_path):
    """torch seeds from 0 to 2**64 - 1: a larger train.seed is refused naming the key, where
    training stopped with "unexpected error: Overflow when unpacking long long"."""
    p = tmp_path / "seed.toml"
    p.write_text(f"[train]\nseed = {2**64}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"invalid configuration ({p}): train.seed: must be at most {2**64 - 1}, not {2**64}"
    p.write_text(f"[train]\nseed = {2**64 - 1}\n")
    assert load_config(p).train.seed == 2**64 - 1


@pytest.mark.parametrize(
    "text, message",
    [
        ('[train]\nepochs = "many"\n', 'train.epochs: expected a whole number, not "many"'),
        ("[window]\nlookback = 3000\n", "window.lookback: must be at most 2000, not 3000"),
    ],
)
def test_a_bad_value_in_the_file_is_refused_even_where_a_flag_sets_that_key(tmp_path, text, message):
    """The file is as wrong with the flag as without it: it is not read as fine until the day
    the flag is left out."""
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, {"train.epochs": 3, "window.lookback": 60})
    assert str(e.value) == f"invalid configuration ({p}): {message}"


def test_a_check_across_keys_of_the_file_may_be_settled_by_the_flags(tmp_path):
    p = tmp_path / "short.toml"
    p.write_text("[window]\nlookback = 4\n")  # ar_order 5 exceeds it, unless a flag lengthens it
    assert load_config(p, {"window.lookback": 20}).window.lookback == 20


def test_a_weight_decay_that_wipes_out_the_weights_at_each_step_is_refused(tmp_path):
    """AdamW multiplies the weights by 1 - lr x weight_decay: at 1 or more training can only
    diverge, which it did to a NaN loss blamed on the learning rate."""
    p = tmp_path / "decay.toml"
    p.write_text("[train]\nweight_decay = 7000\n")
    with pytest.raises(ConfigError) as caught:
        load_config(p)
    msg = str(caught.value)
    assert msg.startswith(f"invalid configuration ({p}): train.weight_decay (7000) times train.lr (0.001)"), msg
    assert "use a weight_decay below 1000" in msg, msg
    with pytest.raises(ConfigError, match="must be below 1"):
        load_config(None, {"train.lr": 10, "train.weight_decay": 0.1})
    assert load_config(p, {"train.lr": 1e-5}).train.weight_decay == 7000  # a flag may settle it
    assert load_config(None, {"train.lr": 10}).train.lr == 10  # the default weight decay takes any lr


def test_a_stored_config_reads_back_with_no_run_dir():
    """run.json keeps run_dir null when it was not set: no folder, not a folder of another kind."""
    stored = Config().model_dump(mode="json")
    assert stored["run_dir"] is None
    assert config_from_dict(stored, "run.json") == Config()


def test_a_stored_config_that_no_longer_validates_is_named_by_where_it_was_stored():
    stored = Config().model_dump(mode="json")
    stored["train"]["newer_setting"] = 1
    with pytest.raises(ConfigError) as caught:
        config_from_dict(stored, "trial 3")
    assert str(caught.value) == "invalid configuration (trial 3): train.newer_setting: unknown key"


@pytest.mark.parametrize("in_the_file", [False, True])
def test_an_override_through_a_setting_is_refused_naming_the_setting(tmp_path, in_the_file):
    """A dotted key that goes through a setting, not a section: one line naming the setting,
    the same whether or not the config file sets it."""
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 3\n" if in_the_file else "[train]\nlr = 0.01\n")
    for key, setting in [("train.epochs.x", "train.epochs"), ("run_dir.x", "run_dir")]:
        with pytest.raises(ConfigError) as caught:
            load_config(path, {key: 1})
        assert str(caught.value) == f"cannot set {key}: {setting} is a setting, not a section"
    with pytest.raises(ConfigError, match=r"^cannot set tune.space.lookback.low: tune.space.lookback is a setting"):
        load_config(None, {"tune.space.lookback.low": 5})
    assert load_config(None, {"tune.space.lookback": [5, 9]}).tune.space.lookback == [5, 9]  # a nested section


def test_a_config_file_that_cannot_be_read_is_one_line_naming_it_and_why(tmp_path, monkeypatch):
    import errno

    below_a_file = tmp_path / "notes.txt" / "c.toml"
    below_a_file.parent.write_text("notes\n")
    with pytest.raises(ConfigError) as caught:
        load_config(below_a_file)
    assert str(caught.value) == f"cannot read config file {below_a_file}: Not a directory"
    denied = tmp_path / "denied.toml"
    denied.write_text("[train]\nepochs = 3\n")
    real = Path.read_bytes

    def no_permission(self):  # what a file of mode 000 gives a user other than root
        if self == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", no_permission)
    with pytest.raises(ConfigError) as caught:
        load_config(denied)
    assert str(caught.value) == f"cannot read config file {denied}: Permission denied"


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("data.source", ["yahoo", "csv"]),
        ("model.cell", ["rnn", "lstm", "gru"]),
        ("model.strategy", ["direct", "recursive"]),
        ("model.target_scale", ["local", "ticker"]),
        ("intervals.step_tracking", ["shared", "separate"]),
        ("train.device", ["auto", "cpu", "cuda", "mps"]),
        ("train.precision", ["fp32", "bf16"]),
        ("train.mode", ["forking", "window"]),
    ],
)
def test_every_documented_choice_is_taken_and_another_refused(key, values):
    section, name = key.split(".")
    for value in values:
        assert getattr(getattr(load_config(None, {key: value}), section), name) == value
    with pytest.raises(ConfigError, match=name):
        load_config(None, {key: "other"})


@pytest.mark.parametrize(
    "over",
    [
        # the shortest window, with a horizon and an autoregressive order as long as it
        {"window.lookback": 2, "window.horizon": 2, "model.ar_order": 2},
        {"window.lookback": 250, "window.horizon": 250},  # the longest horizon
        {"window.horizon": 5, "window.val_days": 5, "window.test_days": 5},  # splits of one window each
        {"model.dropout": 0.99},
        {"model.embedding_dim": 0},  # no ticker embedding
        {"predict.max_staleness": 0},  # no stored bar may lag
        {"tune.space.lookback": [30, 30], "tune.space.dropout": [0.2, 0.2]},  # a range of one value
    ],
)
def test_a_value_at_the_edge_of_what_a_key_takes_is_taken(over):
    dumped = load_config(None, over).model_dump()
    for key, value in over.items():
        node = dumped
        for part in key.split("."):
            node = node[part]
        assert node == value, key


@pytest.mark.parametrize(
    "over, message",
    [
        (
            {"window.lookback": 1, "window.horizon": 1, "model.ar_order": 0},
            "window.lookback: must be greater than 1, not 1",
        ),
        (
            {"window.lookback": 300, "window.horizon": 251, "window.val_days": 300, "window.test_days": 300},
            "window.horizon: must be at most 250, not 251",
        ),
        ({"model.dropout": 1.0}, "model.dropout: must be less than 1.0, not 1.0"),
        ({"model.dropout": float("nan")}, "model.dropout: expected a number, not nan"),
        ({"model.embedding_dim": -1}, "model.embedding_dim: must be at least 0, not -1"),
        ({"predict.max_staleness": -1}, "predict.max_staleness: must be at least 0, not -1"),
        # a study's files are runs/tune/<study>.db and runs/tune/<study>/: never hidden ones
        ({"tune.study": ".hidden"}, "tune.study: a study name is 1-100 letters, digits, '.', '_' or '-', starting"),
    ],
)
def test_a_value_just_past_the_edge_of_what_a_key_takes_is_refused(over, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, over)
    assert str(e.value).startswith(f"invalid configuration (options): {message}")


def test_a_resumed_runs_settings_are_kept_where_the_config_file_does_not_set_them(tmp_path):
    """``train --resume RUN --config FILE``: the file's keys go over the run's stored settings
    key by key, a section the file names keeping the run's other keys; the stored settings
    themselves are left as they were."""
    stored = load_config(None, {"train.lr": 0.01, "train.batch_size": 64, "model.cell": "gru"}).model_dump(mode="json")
    kept = copy.deepcopy(stored)
    p = tmp_path / "more.toml"
    p.write_text("[train]\nepochs = 40\n")
    cfg = load_config(p, {"train.patience": 5, "model.hidden_size": 16}, base=stored)
    assert (cfg.train.epochs, cfg.train.patience, cfg.model.hidden_size) == (40, 5, 16)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.model.cell) == (0.01, 64, "gru")
    assert stored == kept


def test_tickers_may_be_a_list_of_comma_separated_strings(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('[data]\ntickers = ["aaa, BBB", "ccc"]\n')
    assert load_config(p).data.tickers == ["aaa", "BBB", "ccc"]
    assert load_config(None, {"data.tickers": ["AAA,BBB", "CCC"]}).data.tickers == ["AAA", "BBB", "CCC"]


def test_the_defaults_written_as_a_config_file_read_back_the_same(tmp_path):
    """run_dir unset (None) is left out of the file, not written as a folder named "None"."""
    p = tmp_path / "defaults.toml"
    p.write_text(config_toml(Config(), "the defaults"))
    assert "run_dir" not in p.read_text()
    assert load_config(p) == Config()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x = " + "[" * 100_000 + "]" * 100_000 + "\n", "its arrays or tables are nested too deeply"),
        ("[train]\nepochs = " + "9" * 5000 + "\n", "a number has more digits than can be read"),
    ],
    ids=["nested too deeply", "a number of 5000 digits"],
)
def test_a_config_file_tomllib_cannot_read_is_a_config_error(tmp_path, text, expected):
    """tomllib raises RecursionError and ValueError for these, not TOMLDecodeError: they were
    an unexpected error."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config file {re.escape(str(path))} is not valid TOML: {expected}"):
        load_config(path)


def test_a_config_path_holding_a_nul_is_a_config_error_that_says_so(tmp_path):
    """A name with a NUL byte cannot be opened (ValueError: embedded null byte): it was called
    a TOML file with a number of too many digits."""
    with pytest.raises(ConfigError, match="cannot read config file .*: embedded null byte") as raised:
        load_config(tmp_path / "a\0b.toml")
    assert "digits" not in str(raised.value) and "\0" not in str(raised.value)


@pytest.mark.parametrize("dim", [d for d in active_dims() if d.log], ids=lambda d: d.name)
def test_a_log_scale_search_range_from_zero_is_refused_by_its_keys_own_bound(dim):
    """Each value of a [tune.space] range is checked as the config key it sets: a log-scale
    dimension's key is bounded above 0, so a range from 0, whose log the sampler cannot take, is
    refused with the config's other errors, before any trial."""
    with pytest.raises(ConfigError, match=rf"tune\.space\.{dim.name}\.0: must be greater than 0"):
        load_config(None, {f"tune.space.{dim.name}": [0, dim.default[1]]})
