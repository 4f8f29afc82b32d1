import os

from runner.data.fingerprint import CacheState, fingerprint, state_of, why_stale
from runner.data.synth import write_caption, write_video
from runner.spec import Dataset, Task, Trainer


def test_fresh_stale_missing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    clip = write_video(data / "a.mp4", 33, 16)
    write_caption(clip, "first")
    ds = Dataset(path=data, frames=[33])
    fp = fingerprint(ds, Trainer.musubi, Task.t2v_1_3b)
    assert state_of(None, fp) is CacheState.missing
    assert state_of("not json", fp) is CacheState.missing
    recorded = fp.model_dump_json()
    assert state_of(recorded, fp) is CacheState.fresh

    os.utime(clip, (1, 1))  # a touch or a copy keeps the cache
    assert state_of(recorded, fingerprint(ds, Trainer.musubi, Task.t2v_1_3b)) is CacheState.fresh

    write_caption(clip, "second")
    changed = fingerprint(ds, Trainer.musubi, Task.t2v_1_3b)
    assert state_of(recorded, changed) is CacheState.stale
    assert why_stale(recorded, changed) == ["captions changed"]

    write_caption(clip, "first")
    write_video(clip, 41, 16)
    assert why_stale(recorded, fingerprint(ds, Trainer.musubi, Task.t2v_1_3b)) == ["media content changed"]
    i2v = fingerprint(ds, Trainer.musubi, Task.i2v_14b_480p)
    assert "i2v: False → True" in why_stale(recorded, i2v)
    assert state_of(recorded, fingerprint(ds.model_copy(update={"resolutions": [512]}), Trainer.musubi, Task.t2v_1_3b)) is CacheState.stale
