import numpy as np

from bench.pixels import RunShape, bolus_curve, synthesize_run


def test_run_is_deterministic_for_a_seed():
    shape = RunShape(rows=128, columns=128, frames=6, bits_stored=12)
    a, b = synthesize_run(shape, 42), synthesize_run(shape, 42)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, synthesize_run(shape, 43))


def test_values_fit_bits_stored_and_allocation():
    for bits, dtype in [(8, np.uint8), (10, np.uint16), (12, np.uint16)]:
        run = synthesize_run(RunShape(64, 96, 5, bits), 1)
        assert run.shape == (5, 64, 96) and run.dtype == dtype
        assert run.max() <= (1 << bits) - 1 and run.max() > (1 << bits) // 4


def test_contrast_arrives_after_the_mask_frames():
    curve = bolus_curve(frames=12, mask_frames=2)
    assert np.all(curve[:2] == 0) and curve.max() == 1.0
    shape = RunShape(128, 128, 12, 12, mask_frames=2)
    run = synthesize_run(shape, 5).astype(float)
    peak = int(np.argmax(curve))
    # Contrast darkens the vessels: the mean drop at the peak frame dwarfs the mask-to-mask drift.
    drop_at_peak = (run[0] - run[peak]).mean()
    drift = abs((run[0] - run[1]).mean())
    assert drop_at_peak > 5 * drift and drop_at_peak > 1.0
