"""The per-process memo of Nipype's content hashes (qsmprep.cli.filehash)."""

import os

import pytest
from nipype.utils import filemanip

from qsmprep.cli import filehash


@pytest.fixture()
def counted(monkeypatch):
    calls = []

    def original(afile, chunk_len=8192, crypto=None, raise_notfound=False):
        calls.append(afile)
        return filemanip.hash_infile(afile, chunk_len=chunk_len, raise_notfound=raise_notfound)

    monkeypatch.setattr(filehash, "_ORIGINAL", original)
    filehash.clear()
    yield calls
    filehash.clear()


def test_memo_returns_nipypes_hash_and_reads_each_version_once(tmp_path, counted):
    f = tmp_path / "a.nii"
    f.write_bytes(b"x" * 100_000)
    h = filehash.hash_infile(str(f))
    assert h == filemanip.hash_infile(str(f))
    assert filehash.hash_infile(str(f)) == h
    assert filehash.hash_infile(str(tmp_path / "." / "a.nii")) == h  # same file, other spelling
    assert len(counted) == 1
    # same size, content changed, modification time put back: still hashed again (ctime moved)
    st = os.stat(f)
    f.write_bytes(b"y" * 100_000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    h2 = filehash.hash_infile(str(f))
    assert h2 == filemanip.hash_infile(str(f)) != h
    assert len(counted) == 2
    # replaced by another file under the same name
    g = tmp_path / "b.nii"
    g.write_bytes(b"x" * 100_000)
    os.replace(g, f)
    assert filehash.hash_infile(str(f)) == h
    assert len(counted) == 3


def test_missing_files_are_nipypes_business(tmp_path, counted):
    assert filehash.hash_infile(str(tmp_path / "none.nii")) is None
    with pytest.raises(RuntimeError, match="not found"):
        filehash.hash_infile(str(tmp_path / "none.nii"), raise_notfound=True)


def test_install_patches_nipype_input_hashing(tmp_path, monkeypatch):
    from nipype.interfaces.base import specs, support

    monkeypatch.setattr(specs, "hash_infile", specs.hash_infile)
    monkeypatch.setattr(support, "hash_infile", support.hash_infile)
    filehash.install()
    assert specs.hash_infile is filehash.hash_infile
    assert support.hash_infile is filehash.hash_infile
    # a content-hashed interface input gets the same hash value as before
    from nipype.interfaces.base import File, TraitedSpec

    class _Spec(TraitedSpec):
        in_file = File(exists=True)

    f = tmp_path / "c.nii"
    f.write_bytes(b"z" * 5000)
    spec = _Spec(in_file=str(f))
    with_hashes, _ = spec.get_hashval(hash_method="content")
    assert filemanip.hash_infile(str(f)) in str(with_hashes)
