"""The reviewed site files load, and a bad site file is refused naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blocks.site import SiteConfigError, State, load_site_file, parse_csc_name
from tests.conftest import REFERENCE, SITES, needs_reference


def _write(tmp_path: Path, mutate: object) -> Path:
    data = yaml.safe_load((SITES / "summit.yaml").read_text())
    assert callable(mutate)
    mutate(data)
    path = tmp_path / "bad-site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_summit_inventory() -> None:
    site = load_site_file(SITES / "summit.yaml")
    assert len(site.cscs) == 122
    assert len(site.kubernetes_cscs()) == 104
    assert site.is_summit
    enabled = {str(e.name) for e in site.cscs if e.expected_state is State.ENABLED}
    assert enabled == {
        "ScriptQueue:1",
        "ScriptQueue:2",
        "ScriptQueue:3",
        "HVAC:0",
        "WeatherForecast:0",
    }
    assert {str(e.name) for e in site.cscs if e.never_reports_offline} == {
        "MTVMS:1",
        "MTVMS:2",
        "MTVMS:3",
    }
    assert site.csc("MTM1M3").bare_metal == "cRIO"
    queue = site.csc("ScriptQueue:1").kubernetes
    assert queue is not None
    assert (queue.namespace, queue.csc, queue.csc_class) == ("obssys", "mtqueue", "scriptqueue")
    assert site.shutdown.ignore == ["MTM1M3", "MTM1M3TS"]
    assert site.shutdown.start_with == ["Watcher"]
    # The queue that runs the shutdown script goes last.
    assert site.shutdown.queue_offline_order() == [3, 2, 1]
    assert len(site.telegraf.deployments) == 27
    assert site.strimzi.broker_pod_set == "sasquatch-kafka-local-storage"


@pytest.mark.parametrize(
    ("site", "count", "telegraf", "brokers"),
    [
        ("tts", 106, 21, "sasquatch-kafka"),
        ("bts", 106, 25, "sasquatch-kafka-local-storage"),
    ],
)
def test_test_stands(site: str, count: int, telegraf: int, brokers: str) -> None:
    config = load_site_file(SITES / f"{site}.yaml")
    assert len(config.cscs) == count
    assert not config.is_summit
    assert config.shutdown.ignore == []
    assert len(config.telegraf.deployments) == telegraf
    assert config.strimzi.broker_pod_set == brokers
    assert config.csc("DSM:1").expected_state is State.ENABLED


@needs_reference()
@pytest.mark.parametrize(
    ("site", "heading"),
    [
        ("summit", "summit"),
        ("tts", "tucson-teststand"),
        ("bts", "base"),
    ],
)
def test_inventory_matches_reference(site: str, heading: str) -> None:
    text = (REFERENCE / "inventories.md").read_text()
    block = text.split(f"## {heading}\n\n`", 1)[1].split("`", 1)[0]
    config = load_site_file(SITES / f"{site}.yaml")
    assert [str(e.name) for e in config.cscs] == block.split()


def test_every_job_namespace_is_a_synced_app() -> None:
    for site in ("summit", "tts", "bts"):
        config = load_site_file(SITES / f"{site}.yaml")
        namespaces = {e.kubernetes.namespace for e in config.kubernetes_cscs() if e.kubernetes}
        assert namespaces <= set(config.argocd.sync_order)


def _unknown_key(d: dict) -> None:  # type: ignore[type-arg]
    d["kafka"]["bootstrap_server"] = "x:9092"


def _bad_name(d: dict) -> None:  # type: ignore[type-arg]
    d["cscs"][30]["name"] = "ESS:abc"


def _duplicate(d: dict) -> None:  # type: ignore[type-arg]
    d["cscs"].append({"name": "ATDome:0", "bare_metal": "somewhere"})


def _bad_state(d: dict) -> None:  # type: ignore[type-arg]
    d["cscs"][3]["expected_state"] = "RUNNING"


def _unknown_app(d: dict) -> None:  # type: ignore[type-arg]
    d["argocd"]["sync_order"].append("maintel")


def _unknown_csc_field(d: dict) -> None:  # type: ignore[type-arg]
    d["cscs"][0]["expected"] = "STANDBY"


@pytest.mark.parametrize(
    ("mutate", "field", "says"),
    [
        (_unknown_key, "kafka.bootstrap_server", "unknown field"),
        (_bad_name, "cscs[30] (ESS:abc).name", "'ESS:abc' is not a CSC name"),
        (_duplicate, "(top level)", "ATDome:0 is listed twice"),
        (_bad_state, "cscs[3] (ATDome:0).expected_state", "'RUNNING' is not a State name"),
        (
            _unknown_app,
            "argocd",
            "sync_order[11] names 'maintel', which is not one of telescope_apps",
        ),
        (_unknown_csc_field, "cscs[0] (ATAOS:0).expected", "unknown field"),
    ],
)
def test_bad_site_file_names_file_and_field(
    tmp_path: Path, mutate: object, field: str, says: str
) -> None:
    path = _write(tmp_path, mutate)
    with pytest.raises(SiteConfigError) as caught:
        load_site_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid site configuration")
    assert f"  {field}: " in message
    assert says in message


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match="cannot read site file"):
        load_site_file(tmp_path / "missing.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SiteConfigError, match="must be a mapping"):
        load_site_file(path)


def test_parse_csc_name() -> None:
    assert str(parse_csc_name("ESS:104")) == "ESS:104"
    assert str(parse_csc_name("Watcher")) == "Watcher:0"
    for bad in ("ESS:abc", "ess:1", "ESS:", ""):
        with pytest.raises(ValueError, match="is not a CSC name"):
            parse_csc_name(bad)
