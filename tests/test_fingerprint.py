import os

from runner.fingerprint import CacheState, cache_state, fingerprint, record, why_stale
from runner.spec import Dataset, Task, Trainer
from runner.synth import write_caption, write_video


def test_fresh_stale_missing(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    clip = write_video(data / "a.mp4", 33, 16)
    write_caption(clip, "first")
    ds = Dataset(path=data, frames=[33])
    fp = fingerprint(ds, Trainer.musubi, Task.t2v_1_3b)
    assert cache_state(cache, fp) is CacheState.missing
    record(cache, fp)
    assert cache_state(cache, fp) is CacheState.fresh

    os.utime(clip, (1, 1))  # a touch or a copy keeps the cache
    assert cache_state(cache, fingerprint(ds, Trainer.musubi, Task.t2v_1_3b)) is CacheState.fresh

    write_caption(clip, "second")
    changed = fingerprint(ds, Trainer.musubi, Task.t2v_1_3b)
    assert cache_state(cache, changed) is CacheState.stale
    assert why_stale(cache, changed) == ["captions changed"]

    write_video(clip, 41, 16)
    assert "media content changed" in why_stale(cache, fingerprint(ds, Trainer.musubi, Task.t2v_1_3b)) or "files" in str(
        why_stale(cache, fingerprint(ds, Trainer.musubi, Task.t2v_1_3b))
    )
    i2v = fingerprint(ds, Trainer.musubi, Task.i2v_14b_480p)
    assert "i2v: False → True" in why_stale(cache, i2v)
    assert cache_state(cache, fingerprint(ds.model_copy(update={"resolutions": [512]}), Trainer.musubi, Task.t2v_1_3b)) is CacheState.stale
