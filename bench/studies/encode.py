"""Transfer syntaxes for synthetic studies: names, encoders, and the Pixel Data they produce.

Native (uncompressed) Explicit VR Little Endian needs nothing. RLE, JPEG-LS and JPEG 2000
lossless use pydicom 3's encoders with the plugins of the `codecs` extra (pylibjpeg-rle,
pyjpegls, pylibjpeg-openjpeg). JPEG Lossless SV1, the classic XA syntax, has no Python
encoder: DCMTK's `dcmcjpeg` makes it. These are lossless; frames decode back to the same
pixels. JPEG baseline (8-bit, lossy: ultrasound's usual syntax) has no pydicom encoder
either: Pillow (libjpeg) makes it, colour as YCbCr 4:2:2 (PhotometricInterpretation
YBR_FULL_422), and the instance says it was lossily compressed (see mark_lossy).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from bench.common.errors import UserError

CODECS_HINT = "pip install 'pacsbench[codecs]'"


@dataclass(frozen=True)
class TransferSyntax:
    """A transfer syntax a study can be written in, and how we encode it."""

    name: str  # what users type: --transfer-syntax NAME, transfer_syntax = "NAME"
    uid: UID
    plugin: str = ""  # the pydicom encoding plugin it needs ("" for native and SV1)
    package: str = ""  # what provides the plugin
    ratio_band: tuple[float, float] = (1.0, 1.0)  # lossless ratio expected on DSA data (ours and real XA)
    lossy: bool = False  # JPEG baseline: 8-bit data only, pixels change

    @property
    def encapsulated(self) -> bool:
        return self.uid != ExplicitVRLittleEndian

    @property
    def uses_dcmtk(self) -> bool:
        return self.uid == JPEGLosslessSV1


SYNTAXES = {
    s.name: s
    for s in (
        TransferSyntax("explicit", ExplicitVRLittleEndian),
        # RLE only removes runs: noise in the low byte limits it to well under 2:1 at 8 bits.
        TransferSyntax("rle", RLELossless, "pylibjpeg", "pylibjpeg-rle", (1.2, 2.5)),
        TransferSyntax("jpeg-ls", JPEGLSLossless, "pyjpegls", "pyjpegls", (2.0, 3.0)),
        TransferSyntax("j2k", JPEG2000Lossless, "pylibjpeg", "pylibjpeg-openjpeg", (2.0, 3.0)),
        # Huffman-coded first-order prediction (SV1) trails JPEG-LS by 15-25%.
        TransferSyntax("jpeg-sv1", JPEGLosslessSV1, ratio_band=(2.0, 3.0)),
        TransferSyntax("jpeg-baseline", JPEGBaseline8Bit, "pillow", "pillow", lossy=True),
    )
}
LOSSLESS = [name for name, syntax in SYNTAXES.items() if not syntax.lossy]
DEFAULT_SYNTAX = "explicit"


def transfer_syntax(name: str) -> TransferSyntax:
    """The syntax called `name`; an unknown name is a one-line UserError listing the known ones."""
    try:
        return SYNTAXES[name]
    except KeyError:
        raise UserError(f"unknown transfer syntax '{name}' (known: {', '.join(SYNTAXES)})") from None


def syntax_for_uid(uid: str) -> TransferSyntax:
    return next(s for s in SYNTAXES.values() if s.uid == uid)


def dcmcjpeg_path() -> str | None:
    return shutil.which("dcmcjpeg")


def require_encoder(syntax: TransferSyntax) -> None:
    """Raise a one-line UserError when this machine cannot encode `syntax`."""
    if syntax.uses_dcmtk:
        if not dcmcjpeg_path():
            raise UserError(f"transfer syntax {syntax.name} needs DCMTK's dcmcjpeg on PATH (apt-get install dcmtk)")
        return
    if syntax.lossy:
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise UserError(f"transfer syntax {syntax.name} needs the Python package pillow ({CODECS_HINT})") from None
        return
    if syntax.plugin and syntax.plugin not in get_encoder(syntax.uid).available_plugins:
        raise UserError(f"transfer syntax {syntax.name} needs the Python package {syntax.package} ({CODECS_HINT})")


def _pixel_description(header: Dataset) -> dict:
    return {
        "rows": header.Rows,
        "columns": header.Columns,
        "samples_per_pixel": header.SamplesPerPixel,
        "bits_allocated": header.BitsAllocated,
        "bits_stored": header.BitsStored,
        "pixel_representation": header.PixelRepresentation,
        "photometric_interpretation": header.PhotometricInterpretation,
        "number_of_frames": 1,
    }


def native_pixel_data(pixels: np.ndarray) -> bytes:
    """Uncompressed Pixel Data: the frames in little-endian order."""
    return pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()


def _encode_with_pydicom(pixels: np.ndarray, header: Dataset, syntax: TransferSyntax) -> bytes:
    encoder = get_encoder(syntax.uid)
    description = _pixel_description(header)
    frames = [encoder.encode(frame, encoding_plugin=syntax.plugin, **description) for frame in pixels]
    return encapsulate(frames, has_bot=True)


def _encode_with_dcmcjpeg(pixels: np.ndarray, header: Dataset) -> bytes:
    """Write a native file, let dcmcjpeg encode it (lossless SV1), return its Pixel Data."""
    native = Dataset(dict(header.items()))
    native.file_meta = header.file_meta.copy()
    native.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    native.PixelData = native_pixel_data(pixels)
    native["PixelData"].VR = "OB" if header.BitsAllocated == 8 else "OW"
    with tempfile.TemporaryDirectory(prefix="pacsbench-sv1-") as tmp:
        source, target = Path(tmp) / "native.dcm", Path(tmp) / "sv1.dcm"
        native.save_as(source, enforce_file_format=True)
        result = subprocess.run(
            [dcmcjpeg_path() or "dcmcjpeg", "--encode-lossless-sv1", "--true-lossless", str(source), str(target)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"dcmcjpeg failed to encode JPEG Lossless SV1 (exit {result.returncode}): {reason}")
        encoded = dcmread(target)
    if encoded.file_meta.TransferSyntaxUID != JPEGLosslessSV1:
        raise UserError(f"dcmcjpeg wrote {encoded.file_meta.TransferSyntaxUID}, not JPEG Lossless SV1")
    return encoded.PixelData


JPEG_QUALITY = 90  # what ultrasound units commonly write: ratios of about 10-20:1 on cine loops


def _encode_with_pillow(pixels: np.ndarray, header: Dataset) -> bytes:
    """JPEG baseline frames (8-bit grey, or RGB as YCbCr 4:2:2), encapsulated with a Basic Offset Table."""
    from PIL import Image

    if header.BitsAllocated != 8:
        raise UserError(f"transfer syntax jpeg-baseline takes 8-bit pixels, not {header.BitsStored}-bit")
    frames = []
    for frame in pixels:
        buffer = BytesIO()
        Image.fromarray(frame, "RGB" if frame.ndim == 3 else "L").save(
            buffer,
            "JPEG",
            quality=JPEG_QUALITY,
            subsampling=1,  # 1: 4:2:2
        )
        frames.append(buffer.getvalue())
    return encapsulate(frames, has_bot=True)


def mark_lossy(ds: Dataset, syntax: TransferSyntax, native_bytes: int, encoded_bytes: int) -> None:
    """What a lossily compressed instance must say (General Image, Image Pixel): once, and at which ratio."""
    if not syntax.lossy:
        return
    if ds.SamplesPerPixel == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = round(native_bytes / encoded_bytes, 2)
    ds.LossyImageCompressionMethod = "ISO_10918_1"


def encode_pixel_data(pixels: np.ndarray, header: Dataset, syntax: TransferSyntax) -> bytes:
    """The Pixel Data value of `pixels` (frames, rows, columns) in `syntax`.

    `header` is the instance without Pixel Data: it describes the pixels (and, for SV1,
    is written around them so dcmcjpeg sees a valid file).
    """
    if not syntax.encapsulated:
        return native_pixel_data(pixels)
    require_encoder(syntax)
    if syntax.lossy:
        return _encode_with_pillow(pixels, header)
    if syntax.uses_dcmtk:
        return _encode_with_dcmcjpeg(pixels, header)
    return _encode_with_pydicom(pixels, header, syntax)


def attach_pixel_data(ds: Dataset, value: bytes, syntax: TransferSyntax) -> None:
    """Set Pixel Data and the transfer syntax consistently (encapsulated: OB, undefined length)."""
    ds.file_meta.TransferSyntaxUID = syntax.uid
    ds.PixelData = value
    element = ds["PixelData"]
    if syntax.encapsulated:
        element.VR = "OB"
        element.is_undefined_length = True
    else:
        element.VR = "OB" if ds.BitsAllocated == 8 else "OW"
