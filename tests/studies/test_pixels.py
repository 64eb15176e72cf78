import numpy as np

from bench.studies.pixels import LOG_RANGE, RunShape, bolus_curve, field_of_view, synthesize_run
from bench.studies.xa import log_to_linear_lut


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


def _mask_noise(run: np.ndarray, inside: np.ndarray) -> float:
    """Noise of one frame, from the difference of the two mask frames."""
    return float((run[0].astype(float) - run[1])[inside].std() / np.sqrt(2))


def test_more_dose_means_less_noise():
    inside = field_of_view(128, 128)
    noise = [_mask_noise(synthesize_run(RunShape(128, 128, 3, 12, dose=dose), 9), inside) for dose in (250, 1000, 4000)]
    # Quantum noise: four times the quanta, half the noise.
    assert noise[0] > noise[1] > noise[2]
    assert 1.6 < noise[0] / noise[1] < 2.4 and 1.6 < noise[1] / noise[2] < 2.4


def test_outside_the_field_of_view_is_black():
    run = synthesize_run(RunShape(96, 128, 3, 10), 2)
    inside = field_of_view(96, 128)
    assert np.all(run[:, ~inside] == 0)
    assert run[:, inside].min() > 0


def test_mask_subtraction_leaves_the_vessel_tree():
    """LOG data: peak frame minus the masks is ~0 on the anatomy and strongly negative in vessels."""
    shape = RunShape(256, 256, 8, 12, mask_frames=2)
    run = synthesize_run(shape, 4).astype(float)
    inside = field_of_view(256, 256)
    sigma = _mask_noise(run, inside)
    subtracted = (run[int(np.argmax(bolus_curve(8, 2)))] - run[:2].mean(axis=0))[inside]
    vessels = subtracted < -6 * sigma
    assert 0.01 < vessels.mean() < 0.4
    assert abs(np.median(subtracted[~vessels])) < 0.5 * sigma


def test_lin_data_darkens_where_contrast_arrives():
    shape = RunShape(128, 128, 8, 12, intensity="LIN")
    run = synthesize_run(shape, 6).astype(float)
    peak = int(np.argmax(bolus_curve(8, 2)))
    assert (run[0] - run[peak]).mean() > 0 and run.max() <= shape.max_value


def test_log_data_has_a_modality_lut_back_to_linear_intensity():
    for bits in (8, 10, 12):
        lut = np.frombuffer(log_to_linear_lut(bits), dtype="<u2")
        assert lut.size == 1 << bits and lut.max() == 65535  # the descriptor's full 16 bits
        assert np.all(np.diff(lut.astype(int)) >= 0)
        # One e-fold of attenuation is top/LOG_RANGE stored values: the intensity falls by e.
        top, step = (1 << bits) - 1, round(((1 << bits) - 1) / LOG_RANGE)
        assert abs(lut[top] / lut[top - step] - np.e) < 0.05
