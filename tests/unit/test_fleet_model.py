"""The fleet declaration: the 66 hospitals, validation, errors naming file and field."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from connectors.fleet import HOSPITALS_FILE, LOCAL_FILE, SYSTEMS, load_fleet, server_id
from hip.errors import ConfigError

EXPECTED_REGIONS = {"长春": 18, "吉林": 9, "四平": 6, "辽源": 4, "通化": 4, "白山": 3, "松原": 4, "白城": 7,
                    "延边": 9, "长白山": 1, "梅河口": 1}


def test_hospitals_file_holds_the_66_of_attachment_1() -> None:
    fleet = load_fleet(HOSPITALS_FILE)
    assert len(fleet.hospitals) == 66
    assert Counter(h.region for h in fleet.hospitals) == EXPECTED_REGIONS
    names = {h.name for h in fleet.hospitals}
    assert len(names) == 66
    assert {"长春中医药大学附院", "辽源矿业职工医院(辽源市人民医院)", "中国水利水电第一工程局有限公司总医院",
            "梅河口市中心医院", "长白山中心医院", "敦化市医院"} <= names
    assert all(h.placeholder and not h.enabled for h in fleet.hospitals)
    assert all(set(h.systems) == set(SYSTEMS) for h in fleet.hospitals)


def test_local_fleet_loads() -> None:
    fleet = load_fleet(LOCAL_FILE)
    assert {s.capture for _, _, s in fleet.systems(enabled_only=True)} == {"log", "poll"}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fleet.yaml"
    p.write_text(text, encoding="utf-8")
    return p


BASE = """
hospitals:
  - org: SIM01
    name: 测试医院
    region: 长春
    enabled: true
    systems:
      HIS: {db: postgresql, host: h, database: d, credentials: c, vendor_profile: v, capture: log, tables: [s.t]}
"""


def test_unknown_key_names_file_and_field(tmp_path: Path) -> None:
    p = write(tmp_path, BASE.replace("capture: log", "capture: log, colour: red"))
    with pytest.raises(ConfigError) as e:
        load_fleet(p)
    assert str(p) in str(e.value) and "hospitals[0](SIM01).systems.HIS.colour" in str(e.value)


def test_placeholder_cannot_be_enabled(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="placeholder"):
        load_fleet(write(tmp_path, BASE.replace("SIM01", "PH0101")))


def test_secret_in_credentials_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="credentials"):
        load_fleet(write(tmp_path, BASE.replace("credentials: c", "credentials: 'pass word/x'")))
    with pytest.raises(ConfigError, match="config provider"):
        load_fleet(write(tmp_path, BASE.replace("tables: [s.t]", "tables: [s.t], overrides: {database.password: x}")))


def test_poll_needs_cursor_per_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="poll entry"):
        load_fleet(write(tmp_path, BASE.replace("capture: log", "capture: poll")))


def test_poll_margin_defaults_and_bounds(tmp_path: Path) -> None:
    assert load_fleet(write(tmp_path, BASE)).hospitals[0].systems["HIS"].poll_lag_s == 5
    with pytest.raises(ConfigError, match="poll_lag_s"):
        load_fleet(write(tmp_path, BASE.replace("tables: [s.t]", "tables: [s.t], poll_lag_s: -1")))


def test_unknown_system_and_duplicate_org(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown systems"):
        load_fleet(write(tmp_path, BASE.replace("HIS:", "ERP:")))
    dup = BASE + BASE.split("hospitals:\n", 1)[1]
    with pytest.raises(ConfigError, match="declared twice"):
        load_fleet(write(tmp_path, dup))


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_fleet(write(tmp_path, "hospitals:\n  - org: [\n"))
    assert e.value.line is not None


def test_server_ids_are_stable_and_unique_across_the_66() -> None:
    fleet = load_fleet(HOSPITALS_FILE)
    ids = {server_id(h.org, s, spec) for h, s, spec in fleet.systems()}
    assert len(ids) == len(fleet.systems())
    h, s, spec = fleet.systems()[0]
    assert server_id(h.org, s, spec) == server_id(h.org, s, spec) >= 100_000


def test_select_filters() -> None:
    fleet = load_fleet(HOSPITALS_FILE)
    assert len(fleet.select(region="延边")) == 9
    assert fleet.select(org="梅河口市中心医院")[0].region == "梅河口"
    with pytest.raises(ConfigError):
        fleet.select(region="北京")
