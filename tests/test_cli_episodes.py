"""`ramp-edge episodes list|show|label|plot|verify` on episodes recorded through the real store
and recorder (tests/episode_samples.py): typer's runner for most, one real process."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from episode_samples import record_sample_episode, sample_store
from typer.testing import CliRunner

from cli import app
from ramp_edge.episodes import EpisodeStore, open_episode
from ramp_edge.episodes.errors import EpisodeDamagedError, EpisodeStoreError
from ramp_edge.episodes.review import check_structure, find_entry, open_index, relabel
from ramp_edge.episodes.seal import sha256_file
from ramp_edge.episodes.writer import EpisodeMeta

DT = 0.01  # the sample episodes' step period (s)
TAKEOVER = (80, 120)  # the sample episodes' human steps [start, end)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """Two sealed successes with a takeover, then a failure without one."""
    root = tmp_path_factory.mktemp("recorded")
    store, _ = sample_store(root, 2, takeover=TAKEOVER, dt=DT)
    record_sample_episode(store, 150, outcome="failure", takeover=None, seed=7, dt=DT)
    store.close()
    return root


@pytest.fixture
def home(recorded, tmp_path) -> Path:
    """A fresh copy of the recorded home for each test (tests relabel and damage files)."""
    dst = tmp_path / "home"
    shutil.copytree(recorded, dst)
    return dst


def entries(home: Path):
    with open_index(home) as index:
        return index.list()


def invoke(home: Path, *args: str):
    return CliRunner().invoke(app, ["episodes", *args, "--home", str(home)])


def test_when_listed_expect_a_table_on_stderr_and_rows_as_json(home):
    es = entries(home)
    human = invoke(home, "list")
    assert human.exit_code == 0, human.output
    assert human.stdout == ""
    for e in es:
        assert e.id in human.stderr
    rows = json.loads(invoke(home, "list", "--json").stdout)
    assert [r["id"] for r in rows] == [e.id for e in es]
    assert [r["takeovers"] for r in rows] == [1, 1, 0]
    assert [r["steps"] for r in rows] == [200, 200, 150]
    assert {r["task"] for r in rows} == {"pack_box"}
    assert all(r["duration_s"] > 0 for r in rows)


@pytest.mark.parametrize(("args", "expect"), [
    (("--outcome", "failure"), [2]),
    (("--outcome", "success", "--status", "sealed"), [0, 1]),
    (("--status", "recording"), []),
    (("--since", "2h"), [0, 1, 2]),
    (("--since", "2999-01-01"), []),
])
def test_when_list_is_filtered_expect_only_matching_episodes(home, args, expect):
    es = entries(home)
    out = invoke(home, "list", *args, "--json")
    assert out.exit_code == 0, out.output
    assert [r["id"] for r in json.loads(out.stdout)] == [es[i].id for i in expect]


def test_when_the_host_acked_some_expect_synced_only_for_the_acked_sha256(home):
    es = entries(home)
    assert {r["synced"] for r in json.loads(invoke(home, "list", "--json").stdout)} == {None}
    assert "synced" not in invoke(home, "list").stderr.splitlines()[0]
    assert not (home / "sync.sqlite").exists()  # looking does not create the sync state
    from ramp_edge.sync.state import SyncState

    with SyncState(home) as state:
        state.mark_acked(es[0].id, es[0].sha256, es[0].bytes, "host")
        state.mark_acked(es[1].id, "0" * 64, es[1].bytes, "host")  # an older version
    rows = json.loads(invoke(home, "list", "--json").stdout)
    assert [r["synced"] for r in rows] == [True, False, False]
    assert "synced" in invoke(home, "list").stderr.splitlines()[0]
    assert json.loads(invoke(home, "show", es[0].id, "--json").stdout)["synced"] is True
    invoke(home, "label", es[0].id, "failure")  # a new sha256: to be synced again
    assert json.loads(invoke(home, "show", es[0].id, "--json").stdout)["synced"] is False


def test_when_a_filter_value_is_unknown_expect_one_line_and_exit_2(home):
    out = invoke(home, "list", "--status", "done")
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines() == [
        "ramp-edge episodes: unknown status 'done' (one of recording, sealed, aborted)"]


def test_when_shown_by_prefix_expect_sources_takeovers_lateness_values_and_hash(home):
    e = entries(home)[0]
    out = invoke(home, "show", e.id[:-2], "--json")
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    assert d["id"] == e.id and d["steps"] == 200
    n_human = TAKEOVER[1] - TAKEOVER[0]
    assert d["sources"] == {"human": n_human, "policy": 200 - n_human}
    (k,) = d["takeovers"]
    assert k["start_s"] == pytest.approx(TAKEOVER[0] * DT, abs=1e-6)
    assert k["duration_s"] == pytest.approx(n_human * DT, abs=1e-6)
    assert k["steps"] == n_human
    assert [ev["kind"] for ev in d["events"]] == ["takeover_start", "takeover_end"]
    with open_episode(home / e.path) as ep:
        lat = ep.steps().lateness_ms
    assert d["lateness_ms"]["p50"] == pytest.approx(float(np.percentile(lat, 50)))
    assert d["lateness_ms"]["max"] == pytest.approx(float(lat.max()))
    lo, hi = d["value_range"]
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(-1.0 + 199 / 200, abs=1e-6)
    assert d["images"] == {"scene": 67, "wrist": 67}
    assert d["sha256"] == e.sha256 == sha256_file(home / e.path)
    assert d["verify"]["state"] == "ok"
    human = invoke(home, "show", e.id)
    assert "loop lateness ms: p50" in human.stderr and "verify: ok" in human.stderr


def test_when_a_prefix_matches_several_expect_an_error_naming_the_count(home):
    out = invoke(home, "show", "2")
    assert out.exit_code == 1
    assert isinstance(out.exception, EpisodeStoreError)
    assert "matches 3 episodes" in str(out.exception)


def test_when_labelled_expect_resealed_file_new_hash_in_index_and_verify_passes(home):
    e = entries(home)[0]
    out = invoke(home, "label", e.id, "failure", "--by", "alice", "--json")
    assert out.exit_code == 0, out.output
    new = json.loads(out.stdout)
    path = home / e.path
    assert new["outcome"] == "failure" and new["status"] == "sealed"
    assert new["sha256"] != e.sha256
    assert new["sha256"] == sha256_file(path)
    assert new["bytes"] == path.stat().st_size
    assert "relabelled success -> failure by alice" in new["note"]
    with open_episode(path) as ep:
        assert ep.outcome == "failure"
        assert json.loads(ep.meta["relabelled"])["from"] == "success"
        assert len(ep.steps()) == 200
    assert not list(path.parent.glob("*.relabel*"))
    assert invoke(home, "verify", e.id).exit_code == 0
    again = invoke(home, "label", e.id, "failure")
    assert again.exit_code == 0 and "already labelled failure" in again.stderr
    assert sha256_file(path) == new["sha256"]
    aborted = json.loads(invoke(home, "label", e.id[:-1], "aborted", "--json").stdout)
    assert aborted["status"] == "aborted" and aborted["outcome"] == "aborted"
    assert invoke(home, "verify").exit_code == 0


def test_when_label_is_unknown_expect_one_line_and_exit_2(home):
    e = entries(home)[0]
    out = invoke(home, "label", e.id, "sucess")
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines() == [
        "ramp-edge episodes: unknown label 'sucess' (one of success, failure, aborted)"]
    assert sha256_file(home / e.path) == e.sha256


def test_when_episode_is_still_recording_expect_label_refused_and_file_untouched(home):
    store = EpisodeStore(home)
    rec = store.start_episode(EpisodeMeta(task="pack_box"), joint_count=7)
    try:
        eid = rec.episode_id
        before = (home / "episodes" / f"{eid}.sqlite").read_bytes()
        out = invoke(home, "label", eid, "success")
        assert out.exit_code == 1
        assert isinstance(out.exception, EpisodeStoreError)
        assert "still recording" in str(out.exception)
        assert (home / "episodes" / f"{eid}.sqlite").read_bytes() == before
        with open_index(home) as index:
            assert find_entry(index, eid).status == "recording"
        # verify skips it rather than calling it damaged; show reads what is committed
        ver = json.loads(invoke(home, "verify", eid, "--json").stdout)
        assert ver[0]["state"] == "skipped"
        shown = invoke(home, "show", eid, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["status"] == "recording"
    finally:
        rec.finish("aborted")
        store.close()


def test_when_relabel_dies_before_the_index_update_expect_verify_to_flag_it_and_relabel_to_repair(
        home, monkeypatch):
    e = entries(home)[1]
    with open_index(home) as index:
        def power_cut(*_a, **_k):
            raise OSError("power cut")

        monkeypatch.setattr(index, "update", power_cut)
        with pytest.raises(OSError):
            relabel(index, e, "failure")
    out = invoke(home, "verify", e.id)
    assert out.exit_code == 1 and "sha256 mismatch" in out.stderr
    with open_index(home) as index:
        with pytest.raises(EpisodeDamagedError):  # another label would bless unknown damage
            relabel(index, index.get(e.id), "aborted")
        new = relabel(index, index.get(e.id), "failure")
    assert new.outcome == "failure" and new.sha256 == sha256_file(home / e.path)
    assert invoke(home, "verify").exit_code == 0


def _flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["bit_flip", "truncation"])
def test_when_an_episode_file_is_damaged_expect_verify_exit_1_naming_it(home, damage):
    es = entries(home)
    victim = home / es[1].path
    if damage == "bit_flip":
        _flip_bit(victim, victim.stat().st_size // 2)
    else:
        with open(victim, "r+b") as f:
            f.truncate(victim.stat().st_size // 3)
    out = invoke(home, "verify")
    assert out.exit_code == 1
    lines = out.stderr.splitlines()
    assert any(line.startswith(f"{es[1].id}: DAMAGED") for line in lines)
    assert f"{es[0].id}: ok" in out.stderr and f"{es[2].id}: ok" in out.stderr
    assert lines[-1] == "3 episode(s) checked, 1 damaged"
    js = json.loads(invoke(home, "verify", "--json").stdout)
    assert [c["ok"] for c in js] == [True, False, True]
    assert js[1]["sha256_ok"] is False
    assert invoke(home, "verify", es[0].id).exit_code == 0


def test_when_structure_is_wrong_expect_check_structure_to_say_what(home, tmp_path):
    src = home / entries(home)[0].path
    assert check_structure(src) == []
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(src.read_bytes())
    conn = sqlite3.connect(bad)
    conn.execute("UPDATE steps SET command = substr(command, 1, 24) WHERE id IN (5, 6)")
    conn.execute("UPDATE steps SET t_s = t_s - 1 WHERE id = 50")
    conn.execute("DELETE FROM meta WHERE key = 'bundle_hash'")
    conn.executemany("INSERT INTO events (t_s, kind) VALUES (0, 'takeover_end')", [(), ()])
    conn.commit()
    conn.close()
    problems = check_structure(bad)
    assert "2 steps with a command blob not 28 bytes (7 joints)" in problems
    assert any("out of order" in p for p in problems)
    assert "meta keys missing: bundle_hash" in problems
    assert any("takeover events unbalanced" in p for p in problems)


def _shaded_pixels(png: Path):
    from PIL import Image

    from ramp_edge.episodes.plot import TAKEOVER_RGB

    with Image.open(png) as im:
        assert im.format == "PNG"
        rgb = np.asarray(im.convert("RGB"))
    return rgb, np.all(rgb == np.array(TAKEOVER_RGB, dtype=np.uint8), axis=-1)


def test_when_plotted_expect_a_png_with_takeovers_shaded(home, tmp_path):
    pytest.importorskip("matplotlib", reason="the review extra (matplotlib) is not installed")
    es = entries(home)
    out = invoke(home, "plot", es[0].id, "--out", str(tmp_path / "a.png"), "--json")
    assert out.exit_code == 0, out.output
    (res,) = json.loads(out.stdout)
    rgb, shaded = _shaded_pixels(tmp_path / "a.png")
    assert rgb.shape[:2] == (res["height_px"], res["width_px"])
    assert rgb.shape[1] >= 1000 and rgb.shape[0] >= 100 * 7  # room for seven joint panels
    assert res["takeovers"] == 1
    # The takeover is 40 of 200 steps: the columns shaded down the panels (not the legend's
    # small patch) cover a matching share of the plot width.
    cols = np.flatnonzero(shaded.sum(axis=0) > rgb.shape[0] // 4)
    share = len(cols) / rgb.shape[1]
    assert 0.1 < share < 0.25
    assert cols.max() - cols.min() + 1 < 1.1 * len(cols)  # one band (grid lines cross it)
    assert shaded.sum() > 0.02 * shaded.size


def test_when_plotting_all_expect_one_png_per_episode_shaded_only_where_taken_over(
        home, tmp_path):
    pytest.importorskip("matplotlib", reason="the review extra (matplotlib) is not installed")
    es = entries(home)
    out = invoke(home, "plot", "--all", "--out", str(tmp_path / "plots"))
    assert out.exit_code == 0, out.output
    assert sorted(p.stem for p in (tmp_path / "plots").glob("*.png")) == sorted(
        e.id for e in es)
    _, shaded = _shaded_pixels(tmp_path / "plots" / f"{es[2].id}.png")
    assert not shaded.any()  # no takeover, no shading
    _, shaded = _shaded_pixels(tmp_path / "plots" / f"{es[1].id}.png")
    assert shaded.any()
    assert invoke(home, "plot").exit_code == 2


def test_when_matplotlib_is_missing_expect_an_error_naming_the_extra(home, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    out = invoke(home, "plot", entries(home)[0].id, "--out", str(tmp_path / "x.png"))
    assert out.exit_code == 1
    assert "ramp-edge[review]" in str(out.exception)
    assert not (tmp_path / "x.png").exists()


def test_when_run_as_a_command_with_an_unknown_id_expect_one_line_and_exit_1(home):
    exe = Path(sys.executable).parent / "ramp-edge"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import cli; cli.main()"]
    out = subprocess.run([*cmd, "episodes", "show", "nope", "--home", str(home)],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        f"ramp-edge: error: no episode 'nope' in {home / 'index.sqlite'} "
        "(`ramp-edge episodes list` shows them)"]
    out = subprocess.run([*cmd, "episodes", "list", "--json", "--home", str(home)],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 3


def test_when_home_has_no_index_expect_a_clear_error(tmp_path):
    out = invoke(tmp_path / "empty", "list")
    assert out.exit_code == 1
    assert "no episode index" in str(out.exception)
    assert not (tmp_path / "empty").exists()  # looking does not create a home
