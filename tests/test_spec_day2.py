"""The day-2 sections of a pool spec: rollout, refresh, user_disk, notify -- read strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkscale.core.errors import SpecError
from forkscale.spec import Share, parse_spec
from tests.test_spec import base, put

BAD = [
    ("max_unavailable zero", "pools.0.rollout", {"max_unavailable": 0}, "pools[0].rollout.max_unavailable",
     "must be >= 1"),
    ("max_unavailable percent word", "pools.0.rollout", {"max_unavailable": "lots"},
     "pools[0].rollout.max_unavailable", "neither a whole number nor a percentage"),
    ("max_unavailable 0 %", "pools.0.rollout", {"max_unavailable": "0%"}, "pools[0].rollout.max_unavailable",
     "between 1% and 100%"),
    ("max_failure 120 %", "pools.0.rollout", {"max_failure": "120%"}, "pools[0].rollout.max_failure",
     "between 0% and 100%"),
    ("rollout claimed typo", "pools.0.rollout", {"claimed": "on_release"}, "pools[0].rollout.claimed",
     "did you mean 'on-release'"),
    ("force without notify", "pools.0.rollout", {"claimed": "force"}, "pools[0].notify", "required when"),
    ("keep_previous negative", "pools.0.rollout", {"keep_previous_s": -1}, "pools[0].rollout.keep_previous_s",
     ">= 0"),
    ("rollout unknown key", "pools.0.rollout", {"max_unavailble": 2}, "pools[0].rollout.max_unavailble",
     "did you mean 'max_unavailable'"),
    ("max_uses zero", "pools.0.refresh", {"max_uses": 0}, "pools[0].refresh.max_uses", "must be >= 1"),
    ("max_age not a number", "pools.0.refresh", {"max_age_s": "1d"}, "pools[0].refresh.max_age_s",
     "must be a number"),
    ("identity unknown", "pools.0.refresh", {"identity": "fresh"}, "pools[0].refresh.identity", "not one of"),
    ("user disk without size", "pools.0.user_disk", {"datastore": "ds-hdd"}, "pools[0].user_disk.size_gb",
     "required"),
    ("user disk huge", "pools.0.user_disk", {"size_gb": 10**6}, "pools[0].user_disk.size_gb", "largest"),
    ("user disk mode", "pools.0.user_disk", {"size_gb": 5, "mode": "persistent"}, "pools[0].user_disk.mode",
     "not one of"),
    ("notify without command", "pools.0.notify", {"timeout_s": 5}, "pools[0].notify.command", "required"),
]


@pytest.mark.parametrize(("where", "value", "path", "phrase"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_day2_sections_name_the_field(where: str, value: object, path: str, phrase: str, tmp_path: Path):
    with pytest.raises(SpecError) as info:
        parse_spec(put(base(), where, value), base_dir=tmp_path)
    assert info.value.path == path, str(info.value)
    assert phrase in info.value.message


def test_day2_sections_parse(tmp_path: Path):
    raw = put(base(), "pools.0.rollout", {"max_unavailable": "10%", "batch": 3, "max_failure": 1, "claimed": "force",
                                          "force_after_s": 600, "keep_previous_s": 0})
    raw = put(raw, "pools.0.notify", {"command": "wall 'logging you off in 10 minutes'"})
    raw = put(raw, "pools.0.refresh", {"on_release": False, "max_uses": 1, "max_age_s": 86400, "identity": "new"})
    raw = put(raw, "pools.0.user_disk", {"size_gb": 20, "datastore": "ds-hdd", "keep": True})
    pool = parse_spec(raw, base_dir=tmp_path).pools[0]
    assert pool.rollout.max_unavailable == Share(10, percent=True) and pool.rollout.max_unavailable.of(55) == 5
    assert pool.rollout.max_unavailable.of(5, minimum=1) == 1
    assert (pool.rollout.batch, pool.rollout.max_failure, pool.rollout.claimed) == (3, Share(1), "force")
    assert pool.on_release == "keep"  # refresh.on_release: false is `on_release: keep`
    assert (pool.refresh.max_uses, pool.refresh.max_age_s, pool.refresh.identity) == (1, 86400.0, "new")
    assert pool.user_disk is not None and (pool.user_disk.size_gb, pool.user_disk.keep) == (20, True)
    assert pool.notify is not None and pool.notify.command.startswith("wall")


def test_refresh_on_release_must_agree_with_on_release(tmp_path: Path):
    raw = put(put(base(), "pools.0.on_release", "keep"), "pools.0.refresh", {"on_release": True})
    with pytest.raises(SpecError, match="says refresh but the pool's on_release says keep"):
        parse_spec(raw, base_dir=tmp_path)
