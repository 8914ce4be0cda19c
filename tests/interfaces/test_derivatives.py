"""qsmprep.interfaces.derivatives: naming sink, reproducible compression and atomic publication."""

import gzip
import json
import os
import time

from qsmprep.interfaces._io import gzip_header_is_reproducible, write_gzip_reproducible
from qsmprep.interfaces.derivatives import DerivativesSink, PublishDerivatives

SRC = "/data/sub-01/ses-baseline/anat/sub-01_ses-baseline_acq-qsm_run-2_echo-10_part-phase_MEGRE.nii.gz"


def test_sink_and_publish(tmp_path):
    src = tmp_path / "chi.nii.gz"
    src.write_bytes(b"not really nifti")
    work = tmp_path / "work"
    work.mkdir()
    res = DerivativesSink(
        in_file=str(src), source_file=SRC, suffix="Chimap", entities={"desc": "tkd"},
        sidecar={"Units": "ppm"},
    ).run(cwd=str(work))
    out = res.outputs.out_file
    assert out.endswith("sub-01_ses-baseline_acq-qsm_run-2_desc-tkd_Chimap.nii.gz")
    outdir = tmp_path / "out"
    pub = PublishDerivatives(in_files=[out], output_dir=str(outdir)).run(cwd=str(work))
    dest = outdir / "sub-01/ses-baseline/anat/sub-01_ses-baseline_acq-qsm_run-2_desc-tkd_Chimap.nii.gz"
    # a .nii.gz that is not gzip-compressed is published compressed (its name promises gzip)
    assert gzip.decompress(dest.read_bytes()) == b"not really nifti"
    assert json.loads(dest.with_name(dest.name.replace(".nii.gz", ".json")).read_text()) == {"Units": "ppm"}
    assert len(pub.outputs.out_files) == 2
    # no temporary files left behind
    assert not list(outdir.rglob(".*tmp*"))


def test_sink_compresses_uncompressed_nifti(tmp_path):
    import nibabel as nb
    import numpy as np

    src = tmp_path / "chi.nii"
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nb.Nifti1Image(data, np.eye(4)).to_filename(src)
    res = DerivativesSink(in_file=str(src), source_file=SRC, suffix="Chimap", entities={"desc": "x"}).run(
        cwd=str(tmp_path))
    assert res.outputs.out_file.endswith("_desc-x_Chimap.nii.gz")
    assert np.array_equal(np.asarray(nb.load(res.outputs.out_file).dataobj), data)


def test_gzip_written_reproducibly(tmp_path):
    """Same content -> byte-identical .gz whatever the time and file name (RFC 1952 header:
    MTIME 0, no FNAME); a gzip made the default way (name + timestamp) is detected and rewritten."""
    payload = os.urandom(50_000) + bytes(200_000)
    raw = tmp_path / "chi.nii"
    raw.write_bytes(payload)
    default = tmp_path / "default.nii.gz"
    with gzip.open(default, "wb") as fh:  # what the sink used to do
        fh.write(payload)
    assert not gzip_header_is_reproducible(default)

    a = write_gzip_reproducible(raw, tmp_path / "a_sub-01_Chimap.nii.gz")
    time.sleep(1.1)  # a header timestamp would now differ by at least one second
    b = write_gzip_reproducible(default, tmp_path / "other_name.nii.gz")
    head = open(a, "rb").read(10)
    assert head[4:8] == bytes(4) and not head[3] & 0x08
    assert gzip_header_is_reproducible(a) and gzip_header_is_reproducible(b)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert gzip.decompress(open(a, "rb").read()) == payload
    assert b"Chimap" not in open(a, "rb").read(64)
