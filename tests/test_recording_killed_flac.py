"""A FLAC take whose process was killed is kept readable: libsndfile never wrote its length (the
file said 2^63 - 1 frames and could not be read), so ``recover_takes`` repairs it as a full disk's
cut take is repaired, keeping every frame the encoder had written whole."""
import numpy as np
import soundfile as sf

from realtime.io.flac_repair import repair_cut_flac
from realtime.io.recorder import recover_takes
from tests.test_live_review45 import _killed_take


def test_a_killed_flac_take_is_recovered_readable_with_its_whole_frames(tmp_path):
    part = _killed_take(tmp_path / "take.flac", "FLAC", 48000 * 2, "PCM_24")
    assert sf.info(str(part)).frames >= 1 << 62  # as the killed process left it: length unknown
    said = recover_takes(tmp_path / "take.flac")
    kept = next(tmp_path.glob("take.recovered-*.flac"))
    assert len(said) == 1 and "2.0 s" in said[0]
    y, sr = sf.read(kept)
    block = 4096  # libsndfile's FLAC block: the encoder holds the last part-block in memory, lost
    assert sr == 48000 and 48000 * 2 - block < len(y) <= 48000 * 2 and len(y) % block == 0
    assert np.allclose(y, 0.25, atol=1e-6)


def test_a_whole_last_frame_is_kept_and_a_cut_one_dropped(tmp_path):
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (4096 * 5, 2))
    whole, cut = tmp_path / "whole.flac", tmp_path / "cut.flac"
    for p in (whole, cut):
        sf.write(p, x, 48000, subtype="PCM_16")
    with open(cut, "r+b") as f:  # half of the last frame gone, as a full disk leaves it
        size = f.seek(0, 2)
        f.truncate(size - 3000)
    assert repair_cut_flac(whole) == 4096 * 5 and repair_cut_flac(cut) == 4096 * 4
    assert np.allclose(sf.read(whole)[0], x, atol=1 / 32768) and len(sf.read(cut)[0]) == 4096 * 4


def test_a_whole_shorter_final_frame_is_counted_as_the_samples_it_holds(tmp_path):
    """A closed file's last frame is shorter than the block (its leftover samples): kept whole, it was
    counted as a whole block, so STREAMINFO said 24576 samples where 20580 were, and the file could
    not be read ("Internal psf_fseek() failed"). The recorder repairs every FLAC take that had an
    error, a take whose close wrote its final frame too."""
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (4096 * 5 + 100, 2))
    closed, unknown = tmp_path / "closed.flac", tmp_path / "unknown.flac"
    for p in (closed, unknown):
        sf.write(p, x, 48000, subtype="PCM_16")
    with open(unknown, "r+b") as f:  # its length unknown, as a process killed while closing leaves it
        f.seek(18)
        word = int.from_bytes(f.read(8), "big") & ~((1 << 36) - 1)
        f.seek(18)
        f.write(word.to_bytes(8, "big"))
    for p in (closed, unknown):
        assert repair_cut_flac(p) == len(x)
        y, _ = sf.read(p)
        assert len(y) == len(x) and np.allclose(y, x, atol=1 / 32768)


def test_a_killed_flac_take_without_a_whole_frame_is_removed_as_a_header_alone(tmp_path):
    """Killed within its first block (the encoder writes a frame only once 4096 samples are in): the
    take is STREAMINFO alone, its length unknown, and no repair can make it readable. It was kept as
    "take.recovered-….flac", said as a recording kept, and could not be opened."""
    _killed_take(tmp_path / "take.flac", "FLAC", 1000, "PCM_24")
    assert recover_takes(tmp_path / "take.flac") == []
    assert list(tmp_path.iterdir()) == []
