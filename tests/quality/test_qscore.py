"""Q-Score (Eq. 3.1), L_i, A_j and the discriminative band against a direct implementation; edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from replens.quality import (
    NonFiniteRowsError,
    QScoreStream,
    band_features,
    iter_row_blocks,
    load_feature_sets,
    qscore_array,
    qscore_embeddings,
    tail_features,
)

from .conftest import TinySource, direct_qscore, sparse_representations


@pytest.mark.parametrize("dtype, block_rows", [(np.float32, 7), (np.float32, 512), (np.float16, 64), (np.float64, 33)])
def test_stream_matches_the_equations(dtype, block_rows):
    x, _ = sparse_representations(300, 48, seed=1)
    x = x.astype(dtype)
    ref = direct_qscore(x, 4.0, 50, 95)
    assert ref["margin"] > 1e-5  # no entry sits on its threshold: float32 and float64 must agree
    res = qscore_array(x, block_rows=block_rows)
    np.testing.assert_array_equal(res.n_highly, [len(s) for s in ref["L"]])
    np.testing.assert_allclose(res.percentages, ref["A"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res.discriminative, ref["D"])
    np.testing.assert_allclose(res.scores, ref["Q"], rtol=1e-5, atol=1e-6)
    assert (res.scores > 0).sum() > 100  # the data exercise the score, not only its zero case
    expected_without = sum(1 for i, s in enumerate(ref["L"]) if not (s & set(ref["D"])))
    assert res.summary()["samples_without_discriminative"] == expected_without


def test_band_is_a_percentile_rank_band_with_stable_ties():
    a = np.array([0, 0, 0, 0, 5.0, 1.0, 1.0, 9.0, 3.0, 0])  # six features tie at 0 or 1
    order = [0, 1, 2, 3, 9, 5, 6, 8, 4, 7]  # ascending A, ties by index
    # rank k has percentile 100 k / 10: [50, 95) keeps ranks 5..9
    assert band_features(a, 50, 95).tolist() == sorted(order[5:10])
    assert band_features(a, 0, 100).tolist() == list(range(10))
    assert band_features(a, 20, 40).tolist() == sorted(order[2:4])
    assert tail_features(a, 3, "lower").tolist() == sorted(order[:3])
    assert tail_features(a, 3, "upper").tolist() == sorted(order[-3:])
    assert len(band_features(np.zeros(2048), 50, 95)) == 1946 - 1024
    with pytest.raises(ValueError, match="0 <= lower <= upper <= 100"):
        band_features(a, 60, 50)


def test_constant_zero_and_single_spike_rows():
    x = np.zeros((4, 20), np.float32)
    x[1] = 0.3  # constant: sigma = 0, nothing lies strictly above the mean
    x[2] = 1e4 + np.linspace(0, 1e-3, 20)  # nearly constant with a large mean: float32 E[h^2]-mu^2 cancels
    x[3, 7] = 5.0  # one spike: mu = 0.25, sigma = 1.0897, 5 > mu + 4 sigma
    res = qscore_array(x, discriminative=np.array([7]))
    assert res.n_highly.tolist() == [0, 0, 0, 1]
    h = x[3] / np.linalg.norm(x[3])
    np.testing.assert_allclose(res.scores, [0, 0, 0, h[7] - h.mean()], rtol=1e-6)
    assert res.summary()["samples_without_highly_activating"] == 3
    assert res.band is None


def test_no_highly_activating_feature_anywhere_gives_zero_scores_and_a_count():
    rng = np.random.default_rng(0)
    x = rng.uniform(1.0, 2.0, (50, 30))  # bounded: no entry reaches mu + 4 sigma
    res = qscore_array(x)
    assert res.n_highly.sum() == 0 and (res.percentages == 0).all()
    assert (res.scores == 0).all()
    summary = res.summary()
    assert summary["samples_without_discriminative"] == 50 and summary["never_active_features"] == 30


def test_nan_and_inf_rows_are_named_with_their_global_index():
    x, _ = sparse_representations(40, 16)
    x[13, 2] = np.nan
    x[37, 0] = np.inf
    with pytest.raises(NonFiniteRowsError, match=r"rows \[13\]") as info:
        qscore_array(x, block_rows=10)  # row 13 is in the second block
    assert info.value.rows == [13]
    with pytest.raises(NonFiniteRowsError, match=r"rows \[37\]"):
        qscore_array(np.nan_to_num(x, nan=0.0), block_rows=10)
    with pytest.raises(NonFiniteRowsError, match="non-finite"):
        qscore_array(np.full((2, 4), 1e30, np.float32))  # squares overflow float32


def test_bad_shapes_are_clear_errors():
    stream = QScoreStream()
    stream.update(np.ones((3, 5)))
    with pytest.raises(ValueError, match="block has 4 features, earlier blocks had 5"):
        stream.update(np.ones((3, 4)))
    with pytest.raises(ValueError, match="2-D"):
        stream.update(np.ones(5))
    stream.close()
    with pytest.raises(ValueError, match="0 rows"):
        qscore_array(np.zeros((0, 5)))


def test_scale_invariance_and_given_feature_set():
    x, _ = sparse_representations(120, 32, seed=3)
    scale = np.random.default_rng(1).uniform(0.1, 50, (120, 1))
    a, b = qscore_array(x), qscore_array(x * scale)
    np.testing.assert_array_equal(a.discriminative, b.discriminative)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-7)
    given = np.array([0, 5, 9])
    c = qscore_array(x, discriminative=given)
    ref = direct_qscore(x, 4.0, 0, 0)
    expect = np.zeros(120)
    for i, s in enumerate(ref["L"]):
        chosen = sorted(s & set(given.tolist()))
        h = x[i] / np.linalg.norm(x[i])
        expect[i] = float(np.mean(h[chosen] - h.mean())) if chosen else 0.0
    np.testing.assert_allclose(c.scores, expect, rtol=1e-5, atol=1e-7)


def test_memory_mapped_input_and_background_off(tmp_path):
    x, _ = sparse_representations(200, 24, seed=7)
    np.save(tmp_path / "f.npy", x.astype(np.float16))
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")
    blocks = list(iter_row_blocks(mm, 64))
    assert [len(b) for b in blocks] == [64, 64, 64, 8]
    np.testing.assert_array_equal(np.concatenate(blocks), x.astype(np.float16))  # data valid after release
    a = qscore_array(mm, block_rows=64)
    with QScoreStream(background=False) as stream:
        for block in iter_row_blocks(mm, 50):
            stream.update(block)
        b = stream.result()
    np.testing.assert_array_equal(a.scores, b.scores)
    ref = direct_qscore(x.astype(np.float16), 4.0, 50, 95)
    np.testing.assert_allclose(a.scores, ref["Q"], rtol=1e-5, atol=1e-6)


def test_embeddings_folder_streams_every_chunk(tmp_path):
    from replens.models import create_backbone, extract_features, load_embeddings

    model = create_backbone("small_cnn", widths=(8, 8, 16, 32))
    out = extract_features(model, TinySource(n=30, size=16), tmp_path / "emb", chunk_size=8, progress=False)
    emb = load_embeddings(out)
    res, chunks = qscore_embeddings(out, band=(20, 90))
    assert len(chunks.files) == 4 and chunks.names == emb.names
    ref = qscore_array(np.asarray(emb.features), band=(20, 90))
    np.testing.assert_array_equal(res.scores, ref.scores)
    np.testing.assert_array_equal(chunks.rows(np.array([29, 3, 8])), np.asarray(emb.features)[[29, 3, 8]])
    # a NaN written into the third chunk is reported with the sample's name
    bad = np.load(out / "chunk-00002.npy")
    bad[1, 0] = np.nan
    np.save(out / "chunk-00002.npy", bad)
    with pytest.raises(NonFiniteRowsError, match=emb.names[17]):
        qscore_embeddings(out)


def test_feature_set_files(tmp_path):
    x, _ = sparse_representations(60, 16)
    sets = qscore_array(x).feature_sets()
    path = tmp_path / "feature_sets.json"
    path.write_text(json.dumps(sets))
    assert load_feature_sets(path).tolist() == sets["discriminative"]
    assert sorted(sets["discriminative"] + sets["lower_tail"] + sets["upper_tail"]) == list(range(16))
    np.save(tmp_path / "d.npy", np.array([3, 1, 3]))
    assert load_feature_sets(tmp_path / "d.npy").tolist() == [1, 3]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(KeyError, match="no 'discriminative' key"):
        load_feature_sets(tmp_path / "bad.json")


def test_float16_edge_values_are_compared_exactly():
    # +-0, the smallest subnormal, the largest float16 and a value one ulp above 1: the kernel reads float16
    # bit patterns; its L_i must equal the float64 test on the same values for thresholds on and between them
    from replens.quality.qscore import _kernel_source, _run_kernel, _Slot

    row = np.array([0.5, 1.0, np.nextafter(np.float16(1), np.float16(2)), -2.0, -0.0, 0.0, 65504, 6e-8],
                   dtype=np.float16)
    wide = row.astype(np.float64)
    mean, sigma = wide.mean(), wide.std()
    for target in (1.0, 0.99999, 1.0004, 3e-8, 65504.0):  # exact, below, between, subnormal, the largest
        eps = (target - mean) / sigma
        out = _run_kernel(_kernel_source(row[None])[0], eps, _Slot.make(1, len(row)))
        assert set(out.cols.tolist()) == set(np.flatnonzero(wide > mean + eps * sigma).tolist()), target
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((64, 256)) * rng.gamma(1, 1, 256)).astype(np.float16)
    half = _run_kernel(_kernel_source(x)[0], 1.0, _Slot.make(64, 256))
    single = _run_kernel(_kernel_source(x.astype(np.float32))[0], 1.0, _Slot.make(64, 256))
    np.testing.assert_array_equal(half.n_highly, single.n_highly)
    np.testing.assert_array_equal(half.cols, single.cols)


def test_float16_fast_path_and_float32_read_in_place_match_the_float32_copy_bit_for_bit(tmp_path):
    # float16 read as bit patterns, read-only float32 read in place and writeable float32 copied must give the
    # same bits; zero rows (threshold 0) and a nearly constant row (two-pass variance) included
    x, _ = sparse_representations(300, 64, seed=11)
    x[[5, 40, 41, 299]] = 0.0
    x[77] = 3.0 + np.linspace(0, 1e-3, 64)  # nearly constant: float64 statistics
    half = x.astype(np.float16)
    np.save(tmp_path / "f32.npy", half.astype(np.float32))
    runs = {
        "float16": qscore_array(half, block_rows=37),
        "float32 copy": qscore_array(half.astype(np.float32), block_rows=37),
        "float32 memory map": qscore_array(np.load(tmp_path / "f32.npy", mmap_mode="r"), block_rows=37),
    }
    with QScoreStream(background=False) as stream:  # growing blocks: the buffers are re-made
        for lo, hi in ((0, 10), (10, 60), (60, 300)):
            stream.update(half[lo:hi])
        runs["float16, growing blocks, no thread"] = stream.result()
    ref = runs["float32 copy"]
    assert (ref.n_highly[[5, 40, 41, 299]] == 0).all() and (ref.scores > 0).sum() > 100
    for name, res in runs.items():
        for field in ("scores", "n_highly", "n_discriminative", "counts", "discriminative"):
            a, b = getattr(res, field), getattr(ref, field)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (name, field)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_compiled_kernel_matches_the_dense_reference_and_the_equations(dtype):
    from replens.quality.qscore import _kernel_source, _run_kernel, _Slot

    x, _ = sparse_representations(200, 72, seed=4)
    x[[3, 150]] = 0.0  # zero rows: nothing above the mean
    x[9] = 2.0 + np.linspace(0, 1e-3, 72)  # nearly constant: the exact two-pass variance
    x = x.astype(dtype)
    ref = direct_qscore(x, 4.0, 50, 95)
    source, shared = _kernel_source(x)
    assert shared and not source.flags.writeable  # read in place (float16 as its bit patterns)
    out = _run_kernel(source, 4.0, _Slot.make(len(x), x.shape[1]))
    ref_cols = np.concatenate([sorted(L) for L in ref["L"]]).astype(np.int64)  # row-major, ascending in a row
    np.testing.assert_array_equal(out.n_highly, [len(L) for L in ref["L"]])
    np.testing.assert_array_equal(out.cols, ref_cols)
    np.testing.assert_array_equal(out.counts, np.bincount(ref_cols, minlength=x.shape[1]))
    rows = np.repeat(np.arange(len(x)), out.n_highly)
    h = x.astype(np.float64) / np.maximum(np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True), 1e-300)
    np.testing.assert_allclose(out.deviation, h[rows, out.cols] - h.mean(axis=1)[rows], rtol=1e-6, atol=1e-7)


def test_compiled_kernel_threshold_is_exact_in_float64_and_ties_stay_out():
    from replens.quality.qscore import _kernel_source, _run_kernel, _Slot

    rng = np.random.default_rng(2)
    row = rng.gamma(1.0, 1.0, 64).astype(np.float32)
    row[10] = 7.0
    wide = row.astype(np.float64)
    mean, sigma = wide.mean(), wide.std()
    # thresholds 1e-9 below and above the entry 7: a float32 threshold would round both to 7 itself
    for target, inside in ((7.0 * (1 - 1e-9), True), (7.0 * (1 + 1e-9), False), (7.0, False)):
        eps = (target - mean) / sigma
        out = _run_kernel(_kernel_source(row[None])[0], eps, _Slot.make(1, 64))
        expected = set(np.flatnonzero(wide > mean + eps * sigma).tolist())
        assert (10 in expected) == inside
        assert set(out.cols.tolist()) == expected
    # eps = 0: entries equal to the mean are not above it (float16 and float32 alike)
    for dtype in (np.float16, np.float32):
        tie = np.array([[1.0, 2.0, 3.0, 2.0]], dtype=dtype)
        out = _run_kernel(_kernel_source(tie)[0], 0.0, _Slot.make(1, 4))
        assert out.cols.tolist() == [2] and out.n_highly.tolist() == [1]


def test_thread_counts_give_identical_results(tmp_path):
    x, _ = sparse_representations(400, 40, seed=8)
    half = x.astype(np.float16)
    runs = {}
    for threads in (1, 2, 3):
        for dtype, data in (("float16", half), ("float32", half.astype(np.float32))):
            with QScoreStream(threads=threads, spill_dir=tmp_path) as stream:
                for block in iter_row_blocks(data, 23):
                    stream.update(block)
                runs[threads, dtype] = stream.result()
    ref = runs[1, "float16"]
    for key, res in runs.items():
        for field in ("scores", "n_highly", "n_discriminative", "counts", "discriminative"):
            assert getattr(res, field).tobytes() == getattr(ref, field).tobytes(), (key, field)
    assert not list(tmp_path.iterdir())  # the spill folders are gone
    with pytest.raises(ValueError, match="threads must be >= 1"):
        QScoreStream(threads=0)


@pytest.mark.parametrize("threads", [1, 3])
def test_non_finite_rows_of_background_blocks_name_global_rows(threads):
    x, _ = sparse_representations(60, 16, seed=5)
    x = x.astype(np.float16)
    bad = x.copy()
    bad[23, 4] = np.inf  # third block: the caller's own with 3 threads
    bad[47, 0] = np.nan  # fifth block: a background thread's
    with QScoreStream(threads=threads) as stream, pytest.raises(NonFiniteRowsError, match=r"rows \[23\]") as info:
        for block in iter_row_blocks(bad, 10):
            stream.update(block)
        stream.result()
    assert info.value.rows == [23]
    bad[23, 4] = 0.0
    with pytest.raises(NonFiniteRowsError, match=r"rows \[47\]"):
        qscore_array(bad, block_rows=10)
