"""Every transfer syntax pydicom knows: stored as sent, byte for byte, by DCMTK's storescu and
by pynetdicom, and retrieved back equal with C-GET and C-MOVE; decompressed only for a peer
that takes nothing else, and a failed sub-operation where no decoder exists."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers.archive import start_archive
from helpers.dicomfiles import dataset_bytes
from pydicom import dcmread, uid
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID, AllTransferSyntaxes, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove

from bench.common.processes import free_local_port

# pydicom's own small test files (bundled with the package, read offline), one per syntax.
BUNDLED = {
    uid.ImplicitVRLittleEndian: "MR_small_implicit.dcm",
    uid.ExplicitVRLittleEndian: "MR_small.dcm",
    uid.DeflatedExplicitVRLittleEndian: "image_dfl.dcm",
    uid.ExplicitVRBigEndian: "MR_small_bigendian.dcm",
    uid.JPEGBaseline8Bit: "SC_rgb_small_odd_jpeg.dcm",  # lossy JPEG baseline
    uid.JPEGExtended12Bit: "JPEG-lossy.dcm",  # lossy JPEG extended
    uid.JPEGLSLossless: "MR_small_jpeg_ls_lossless.dcm",
    uid.JPEGLSNearLossless: "JPEGLSNearLossless_08.dcm",
    uid.JPEG2000Lossless: "MR_small_jp2klossless.dcm",
    uid.JPEG2000: "SC_rgb_gdcm_KY.dcm",  # lossy JPEG 2000
    uid.RLELossless: "SC_rgb_rle.dcm",
}
# Syntaxes without a bundled file (JPEG lossless, JPEG 2000 Part 2, HTJ2K, video, SMPTE 2110,
# JPIP) get the JPEG file's encapsulated fragments under their name: the archive never decodes
# what it stores, so the bytes only have to be a dataset pydicom can read.
RELABELED_FROM = "SC_rgb_small_odd_jpeg.dcm"
# storescu proposes a file's own syntax only when told to, by these options; pynetdicom sends
# the syntaxes it has none for (JPEG lossless .57, JPEG 2000 Part 2, fragmentable video, HTJ2K,
# JPIP, SMPTE ST 2110) alone.
STORESCU_OPTION = {
    uid.ImplicitVRLittleEndian: "-xi",
    uid.ExplicitVRLittleEndian: "-xe",
    uid.DeflatedExplicitVRLittleEndian: "-xd",
    uid.ExplicitVRBigEndian: "-xb",
    uid.JPEGBaseline8Bit: "-xy",
    uid.JPEGExtended12Bit: "-xx",
    uid.JPEGLosslessSV1: "-xs",
    uid.JPEGLSLossless: "-xt",
    uid.JPEGLSNearLossless: "-xu",
    uid.JPEG2000Lossless: "-xv",
    uid.JPEG2000: "-xw",
    uid.RLELossless: "-xr",
    uid.MPEG2MPML: "-xm",
    uid.MPEG2MPHL: "-xh",
    uid.MPEG4HP41: "-xn",
    uid.MPEG4HP41BD: "-xl",
    uid.MPEG4HP422D: "-x2",
    uid.MPEG4HP423D: "-x3",
    uid.MPEG4HP42STEREO: "-xo",
    uid.HEVCMP51: "-x4",
    uid.HEVCM10P51: "-x5",
}
SYNTAXES = [str(ts) for ts in AllTransferSyntaxes]


def sample(syntax: str, folder: Path) -> Path:
    """A small file in `syntax`, with fresh UIDs (one study per file)."""
    ds = dcmread(get_testdata_file(BUNDLED.get(syntax, RELABELED_FROM)))
    if syntax not in BUNDLED:
        ds.file_meta.TransferSyntaxUID = syntax
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = folder / f"{syntax}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("syntaxes")
    return {syntax: sample(syntax, folder) for syntax in SYNTAXES}


def read_dataset(data: bytes, syntax: str) -> Dataset:
    from io import BytesIO

    from pydicom.filereader import read_dataset as read

    syntax = UID(syntax)
    if syntax.is_deflated:
        import zlib

        data = zlib.decompress(data, -zlib.MAX_WBITS)
    return read(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian)


def values(ds: Dataset) -> dict:
    return {element.tag: element.value for element in ds}


def stored(archive) -> dict[str, tuple[str, bytes]]:
    """SOP Instance UID -> (stored transfer syntax, dataset bytes of the stored file)."""
    with sqlite3.connect(archive.index) as db:
        rows = db.execute("SELECT sop_uid, transfer_syntax, path FROM instance").fetchall()
    return {sop: (syntax, dataset_bytes(Path(path))) for sop, syntax, path in rows}


def store_with_pynetdicom(archive, files: list[Path]) -> list[int]:
    ae = AE(ae_title="PYNETDICOM")
    datasets = [dcmread(f) for f in files]
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds).Status for ds in datasets]
    finally:
        assoc.release()


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_every_syntax_is_stored_as_sent(dcmtk, samples, tmp_path):
    storescu = dcmtk.storescu
    archive = start_archive(tmp_path / "archive")
    try:
        for syntax, option in STORESCU_OPTION.items():
            result = subprocess.run(
                [storescu, option, "-aec", archive.ae_title, "127.0.0.1", str(archive.port), str(samples[syntax])],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, f"{syntax}: {result.stderr}"
        # pynetdicom sends them all again, as new instances (DCMTK's copies stay as they are)
        again = [sample(s, tmp_path) for s in SYNTAXES]
        assert store_with_pynetdicom(archive, again) == [0] * len(again)
        archived = stored(archive)
    finally:
        archive.stop()
    for syntax, path in zip(SYNTAXES, again):  # pynetdicom sends the file's dataset bytes
        assert archived[sop_uid(path)] == (syntax, dataset_bytes(path)), f"{syntax} not stored as sent"
    for syntax, path in ((s, samples[s]) for s in STORESCU_OPTION):
        # storescu re-encodes the elements it reads (drops trailing padding, writes encapsulated Pixel
        # Data as OB where pydicom's file says OW): the same values, the same (compressed) pixel bytes
        stored_syntax, stored_bytes = archived[sop_uid(path)]
        assert stored_syntax == syntax
        source = values(dcmread(path))
        source.pop(0xFFFCFFFC, None)  # Data Set Trailing Padding: storescu drops it
        assert values(read_dataset(stored_bytes, syntax)) == source, f"{syntax} not stored as sent by storescu"


def keeping(received: dict[str, tuple[str, bytes]]) -> list:
    """pynetdicom's event handlers that keep each instance stored to us: SOP Instance UID -> (syntax, dataset bytes)."""

    def on_store(event):
        received[event.request.AffectedSOPInstanceUID] = (
            event.context.transfer_syntax,
            event.encoded_dataset(include_meta=False),
        )
        return 0x0000

    return [(evt.EVT_C_STORE, on_store)]


def get_back(archive, study_uid: str, syntaxes: list[str]) -> tuple[dict, list[int]]:
    """C-GET a study, offering the storage contexts of `syntaxes`; (received datasets by SOP UID, statuses)."""
    received: dict[str, tuple[str, bytes]] = {}

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    classes = {uid.MRImageStorage, uid.SecondaryCaptureImageStorage}
    for sop_class in sorted(classes):
        for syntax in syntaxes:
            ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(
        "127.0.0.1",
        archive.port,
        ae_title=archive.ae_title,
        ext_neg=[build_role(c, scp_role=True) for c in classes],
        evt_handlers=keeping(received),
    )
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", study_uid
    try:
        statuses = [int(s.Status) for s, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    return received, statuses


@pytest.fixture(scope="module")
def archive_of_every_syntax(samples, tmp_path_factory):
    folder = tmp_path_factory.mktemp("archive")
    move_port = free_local_port()
    (folder / "archive.toml").write_text(f'[destinations.MOVESCP]\nhost = "127.0.0.1"\nport = {move_port}\n')
    archive = start_archive(folder / "data", "--config", str(folder / "archive.toml"))
    try:  # a failed set-up must not leave the archive running
        archive.move_port = move_port
        assert store_with_pynetdicom(archive, list(samples.values())) == [0] * len(samples)
        yield archive
    finally:
        archive.stop()


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_c_get_returns_each_syntax_as_stored(archive_of_every_syntax, samples, syntax):
    ds = dcmread(samples[syntax], stop_before_pixels=True)
    received, statuses = get_back(archive_of_every_syntax, ds.StudyInstanceUID, SYNTAXES)
    assert statuses[-1] == 0
    assert received == {ds.SOPInstanceUID: (syntax, dataset_bytes(samples[syntax]))}


def test_c_move_sends_every_syntax_as_stored(archive_of_every_syntax, samples):
    received: dict[str, tuple[str, bytes]] = {}

    scp = AE(ae_title="MOVESCP")
    for sop_class in (uid.MRImageStorage, uid.SecondaryCaptureImageStorage):
        scp.add_supported_context(sop_class, SYNTAXES)
    server = scp.start_server(
        ("127.0.0.1", archive_of_every_syntax.move_port), block=False, evt_handlers=keeping(received)
    )
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    try:
        for path in samples.values():
            ds = dcmread(path, stop_before_pixels=True)
            assoc = ae.associate("127.0.0.1", archive_of_every_syntax.port, ae_title=archive_of_every_syntax.ae_title)
            identifier = Dataset()
            identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", ds.StudyInstanceUID
            statuses = [
                int(s.Status)
                for s, _ in assoc.send_c_move(identifier, "MOVESCP", StudyRootQueryRetrieveInformationModelMove)
            ]
            assoc.release()
            assert statuses[-1] == 0, ds.file_meta.TransferSyntaxUID
    finally:
        server.shutdown()
    assert received == {sop_uid(p): (s, dataset_bytes(p)) for s, p in samples.items()}


def decodable(ds: Dataset):
    """The pixels, if this environment has a decoder for the dataset's syntax; else None."""
    try:
        return ds.pixel_array
    except Exception:  # pydicom raises several kinds when no plugin can decode
        return None


@pytest.mark.parametrize("syntax", [s for s in BUNDLED if UID(s).is_compressed] + [uid.MPEG2MPML])
def test_c_get_decompresses_for_a_peer_that_takes_only_uncompressed_where_a_decoder_exists(
    archive_of_every_syntax, samples, syntax
):
    """Decoded by pydicom's plugins where one is installed (lossy JPEG baseline through Pillow, JPEG 2000
    through openjpeg...); else (12-bit JPEG without pylibjpeg-libjpeg, video: never) a failed sub-operation."""
    from io import BytesIO

    from pydicom.dataset import FileMetaDataset
    from pynetdicom.dsutils import decode

    source = dcmread(samples[syntax])
    pixels = decodable(source) if syntax in BUNDLED else None  # relabeled fragments decode to nothing useful
    received, statuses = get_back(archive_of_every_syntax, source.StudyInstanceUID, [ExplicitVRLittleEndian])
    if pixels is None:
        assert received == {} and statuses[-1] == 0xA702  # unable to perform sub-operations
        assert f"{source.SOPInstanceUID} failed: cannot decompress" in archive_of_every_syntax.log.read_text()
        return
    assert statuses[-1] == 0
    [(got_syntax, data)] = received.values()
    assert got_syntax == ExplicitVRLittleEndian
    got = decode(BytesIO(data), False, True)
    got.file_meta = FileMetaDataset()
    got.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert (got.pixel_array == pixels).all()
