"""Every shipped profile in every transfer syntax: dciodvfy clean, lossless, ratio in band.

Each profile's run is synthesized once at its real geometry and bit depth, but with only
four frames (two masks, two with contrast), so the whole matrix stays fast.
"""

import subprocess
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
from helpers.tools import require_tool, syntax_params
from pydicom import dcmread

from bench.studies.encode import LOSSLESS, SYNTAXES, attach_pixel_data, encode_pixel_data, transfer_syntax
from bench.studies.generate import plan_study
from bench.studies.pixels import synthesize_run
from bench.studies.profile import Profile, available_profiles, load_profile
from bench.studies.xa import build_header

FRAMES = 4
MATRIX = syntax_params([(p, s) for p in available_profiles(Profile) for s in LOSSLESS])


@lru_cache(maxsize=None)
def short_run(profile_name: str):
    """(pixels, header) of the first run of the profile's first study, cut to FRAMES frames."""
    profile = load_profile(profile_name)
    plan = plan_study(profile, seed=3, index=0)
    run = plan.runs[0]
    shape = replace(run.shape, frames=FRAMES)
    pixels = synthesize_run(shape, run.pixel_seed)
    return pixels, build_header(shape, plan.keys, run.keys, profile.frame_rate, profile.body_part)


@pytest.fixture(scope="module")
def encoded_file(tmp_path_factory):
    """Write (profile, syntax) once per module; return (path, original pixels)."""
    folder = tmp_path_factory.mktemp("syntaxes")
    made = {}

    def make(profile_name: str, syntax_name: str):
        if (profile_name, syntax_name) not in made:
            syntax = transfer_syntax(syntax_name)
            if syntax.uses_dcmtk:
                require_tool("dcmcjpeg", "dcmtk")
            pixels, header = short_run(profile_name)
            ds = build_header_copy(header)
            attach_pixel_data(ds, encode_pixel_data(pixels, ds, syntax), syntax)
            path = folder / f"{profile_name}-{syntax_name}.dcm"
            ds.save_as(path, enforce_file_format=True)
            made[profile_name, syntax_name] = (path, pixels)
        return made[profile_name, syntax_name]

    return make


def build_header_copy(header):
    copy = header.copy()
    copy.file_meta = header.file_meta.copy()
    return copy


def decoded_pixels(path, tmp_path) -> np.ndarray:
    """Decode with pydicom's plugins; JPEG Lossless SV1 with DCMTK's dcmdjpeg (a real decoder)."""
    ds = dcmread(path)
    if ds.file_meta.TransferSyntaxUID == SYNTAXES["jpeg-sv1"].uid:
        dcmdjpeg = require_tool("dcmdjpeg", "dcmtk")
        native = tmp_path / "native.dcm"
        subprocess.run([dcmdjpeg, str(path), str(native)], check=True, capture_output=True)
        ds = dcmread(native)
    return ds.pixel_array


@pytest.mark.parametrize("profile_name, syntax_name", MATRIX)
def test_dciodvfy_reports_nothing(dciodvfy, encoded_file, profile_name, syntax_name):
    path, _ = encoded_file(profile_name, syntax_name)
    assert dciodvfy.problems(path) == []


@pytest.mark.parametrize("profile_name, syntax_name", MATRIX)
def test_decodes_to_the_same_pixels(encoded_file, tmp_path, profile_name, syntax_name):
    path, pixels = encoded_file(profile_name, syntax_name)
    assert dcmread(path).file_meta.TransferSyntaxUID == SYNTAXES[syntax_name].uid
    assert np.array_equal(decoded_pixels(path, tmp_path), pixels)


@pytest.mark.parametrize("profile_name, syntax_name", MATRIX)
def test_compression_ratio_is_in_the_band_of_real_xa(encoded_file, profile_name, syntax_name):
    path, pixels = encoded_file(profile_name, syntax_name)
    ratio = pixels.nbytes / len(dcmread(path).PixelData)
    low, high = SYNTAXES[syntax_name].ratio_band
    assert low <= ratio <= high, f"{profile_name} {syntax_name}: {ratio:.2f}:1 outside {low}-{high}"
