"""``data.options`` reach the dataset's loader, and an option it lacks is one line naming data.options."""

import pytest

from stmgt.config import load_config
from stmgt.data.source import load_source
from stmgt.errors import ConfigError

OBS = ("timestamp,node_id,value\n2024-05-01 08:00,A,40\n2024-05-01 08:00,B,35\n2024-05-01 08:05,A,41\n"
       "2024-05-01 08:05,B,36\n2024-05-01 08:10,A,42\n2024-05-01 08:10,B,37\n")


@pytest.fixture
def city(tmp_path):
    d = tmp_path / "town"
    d.mkdir()
    (d / "observations.csv").write_text(OBS)
    (d / "edges.csv").write_text("source,target\nA,B\n")
    return d


def test_options_reach_the_loader(city, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(f"data:\n  source: {city}\n  options: {{units: mph, interval: 10min}}\n")
    panel = load_source(load_config(p).data)
    assert panel.units == "mph" and panel.interval_minutes == 10
    assert load_source(load_config(None, {"data.source": str(city)}).data).interval_minutes == 5  # inferred


def test_an_option_the_loader_lacks_is_one_line(city):
    cfg = load_config(None, {"data.source": str(city), "data.options": {"unit": "mph"}}).data
    says = r"^data.options: the city loader has no option 'unit'; its options are: .*units"
    with pytest.raises(ConfigError, match=says):
        load_source(cfg)
    with pytest.raises(ConfigError, match="^data.options: the synthetic city takes no loader options"):
        load_source(load_config(None, {"data.options": {"units": "mph"}}).data)
