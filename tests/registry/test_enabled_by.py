"""Tests of a service's ``enabled_by``: the setting it needs, validated, and what it means."""

from __future__ import annotations

from pathlib import Path

import pytest

from trioshop.config import Settings
from trioshop.registry import RegistryError, load_registry


def relay_entry(registry_copy: Path, enabled_by: str) -> Path:
    processes = registry_copy / "processes.yaml"
    processes.write_text(
        processes.read_text().replace("enabled_by: events_redis", f"enabled_by: {enabled_by}")
    )
    return registry_copy


def test_the_shipped_relay_runs_only_with_a_redis_url(registry_copy: Path) -> None:
    """The relay is enabled by events_redis: off by default, on with a URL; others always on."""
    services = {s.name: s for s in load_registry(registry_copy).services}
    assert services["relay"].enabled_by == "events_redis"
    assert not services["relay"].enabled(Settings())
    assert services["relay"].enabled(Settings(events_redis="redis://127.0.0.1:6379/0"))
    assert services["delivery"].enabled(Settings())


@pytest.mark.parametrize("value", ["read_timeout", "no_such_setting", "[events_redis]"])
def test_enabled_by_must_name_a_setting_that_is_off_by_default(
    registry_copy: Path, value: str
) -> None:
    """A setting that is always set, unknown, or not a name is refused, naming the choices."""
    with pytest.raises(RegistryError) as info:
        load_registry(relay_entry(registry_copy, value))
    message = str(info.value)
    assert "entry 'app:relay'" in message
    assert "field 'enabled_by' must name a setting that is off by default" in message
    assert "'events_redis'" in message
