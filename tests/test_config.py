from pathlib import Path

import pytest
import yaml

from mmner.config import load_config
from mmner.errors import MmnerError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = load_config(path)
    assert config.model_params().name
    # config.yaml of a run dir: fully resolved, and reads back to the same settings
    reloaded = load_config(None, base=yaml.safe_load(config.to_yaml()))
    assert reloaded.model_params() == config.model_params()
    assert reloaded.model_dump(exclude={"model"}) == config.model_dump(exclude={"model"})


def test_overrides_are_typed():
    config = load_config(CONFIGS[0], ["trainer.max_epochs=3", "optim.lr=0.5", "trainer.devices=[0,1]"])
    assert config.trainer.max_epochs == 3 and config.optim.lr == 0.5 and config.trainer.devices == [0, 1]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_epoch=3"], "config key 'trainer.max_epoch': unknown key (allowed: max_epochs,"),
        (["model.dropuot=0.1"], "config key 'model.dropuot': unknown key (allowed: name, encoder,"),
        (["model.name=nope"], "model.name: unknown model 'nope' (choose one of: "),
        (["trainer.max_epochs=many"], "config key 'trainer.max_epochs': "),
        (["visual.source=video"], "config key 'visual.source': "),
        (["bogus=1"], "config key 'bogus': unknown key (allowed: name, seed, model,"),
        (["trainer"], "expected key=value"),
    ],
)
def test_bad_keys_name_the_key(overrides, message):
    with pytest.raises(MmnerError) as err:
        load_config(Path(__file__).resolve().parents[1] / "configs" / "bert-crf-minilm-twitter2017.yaml", overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: bert-crf\n trainer: [\n")
    with pytest.raises(MmnerError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(bad)
    with pytest.raises(MmnerError, match="missing.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml")
