"""Command line parser, path validation and the run configuration."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qsmprep import __version__
from qsmprep.cli.parser import METHOD_OPTIONS, get_parser, parse_args
from qsmprep.config import RunConfig, available_cpus
from qsmprep.errors import MissingInputError, OutputNotWritableError, UsageError
from tests._paths import REPO_ROOT


@pytest.fixture
def bids(tmp_path):
    root = tmp_path / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    return root


def _exit_code(argv, capsys=None):
    with pytest.raises(SystemExit) as exc:
        get_parser().parse_args(argv)
    return exc.value.code


def test_bad_option_exits_64(bids, tmp_path, capsys):
    assert _exit_code([str(bids), str(tmp_path / "out"), "participant", "--no-such-option"]) == 64
    assert "unrecognized arguments" in capsys.readouterr().err
    assert _exit_code([str(bids)]) == 64  # missing positionals
    assert _exit_code([str(bids), str(tmp_path / "o"), "participant", "--nprocs", "zero"]) == 64
    assert _exit_code([str(bids), str(tmp_path / "o"), "participant", "--inversion", "magic"]) == 64
    assert _exit_code([str(bids), str(tmp_path / "o"), "participant", "--plugin-args", "{bad"]) == 64
    assert _exit_code([str(bids), str(tmp_path / "o"), "group", "--fdr-alpha", "1.5"]) == 64


def test_unknown_level_exits_17(bids, tmp_path, capsys):
    """Through main(): an unknown level exits 17 (not argparse's 2 or the usage code 64),
    names the level, and creates nothing."""
    from qsmprep.cli.run import main

    with pytest.raises(SystemExit) as exc:
        main([str(bids), str(tmp_path / "out"), "session"])
    assert exc.value.code == 17
    assert "unknown analysis level 'session'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_version(capsys):
    assert _exit_code(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_labels_stripped_and_aliases(bids, tmp_path):
    ns = parse_args([str(bids), str(tmp_path / "out"), "participant",
                     "--participant_label", "sub-01", "02", "--session-label", "ses-baseline",
                     "--n-cpus", "2", "--omp-nthreads", "1", "-vv", "--plugin-args", '{"x": 1}'])
    assert ns.participant_label == ["01", "02"] and ns.session_label == ["baseline"]
    assert ns.nprocs == 2 and ns.omp_nthreads == 1 and ns.verbose == 2
    assert ns.plugin_args == {"x": 1}
    assert ns.bids_dir == bids.absolute() and ns.output_dir.is_absolute()
    assert not (tmp_path / "out").exists()  # parsing creates nothing
    assert _exit_code([str(bids), str(tmp_path / "o"), "participant", "--participant-label", "sub-0_1"]) == 64


def test_every_registered_method_reaches_the_run_configuration(bids, tmp_path):
    """Each registered method of a step (qsmprep.qsm.methods), given on the command line, is the value the run
    configuration (and so the workflow) gets; a name outside the registry exits 64.

    Fails when the parser and RunConfig.validate disagree about a method, or when an option's
    value is dropped on its way from the command line into RunConfig.
    """
    from qsmprep.qsm import methods

    base = [str(bids), str(tmp_path / "out"), "participant"]
    for opt in METHOD_OPTIONS:
        flag = f"--{opt.replace('_', '-')}"
        for name in methods.names(opt):
            assert getattr(RunConfig.from_args(parse_args(base + [flag, name])), opt) == name
        assert _exit_code(base + [flag, "not-a-method"]) == 64


def test_missing_bids_dir_66(tmp_path):
    with pytest.raises(MissingInputError) as exc:
        parse_args([str(tmp_path / "nope"), str(tmp_path / "out"), "participant"])
    assert exc.value.exit_code == 66 and "nope" in str(exc.value)


def test_output_inside_bids_rejected(bids):
    for out in (bids, bids / "sub-01", bids / "derivatives"):
        with pytest.raises(UsageError) as exc:
            parse_args([str(bids), str(out), "participant"])
        assert exc.value.exit_code == 64 and "derivatives" in str(exc.value)
    ns = parse_args([str(bids), str(bids / "derivatives" / "qsmprep"), "participant", "-w", str(bids.parent / "w")])
    assert ns.output_dir == bids / "derivatives" / "qsmprep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_output_not_writable_73(bids, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputNotWritableError) as exc:
            parse_args([str(bids), str(ro / "out"), "participant"])
        assert exc.value.exit_code == 73
    finally:
        ro.chmod(0o700)


def test_output_path_is_a_file_73(bids, tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(OutputNotWritableError) as exc:
        parse_args([str(bids), str(f / "out"), "participant"])
    assert exc.value.exit_code == 73


def test_missing_filter_file_and_atlas_66(bids, tmp_path):
    with pytest.raises(MissingInputError):
        parse_args([str(bids), str(tmp_path / "o"), "participant", "--bids-filter-file", str(tmp_path / "f.json")])
    with pytest.raises(MissingInputError):
        parse_args([str(bids), str(tmp_path / "o"), "participant", "--atlas", str(tmp_path / "atlas")])


# ------------------------------------------------------------------------------------------
def test_runconfig_defaults_and_provenance(bids, tmp_path):
    filt = tmp_path / "filters.json"
    filt.write_text(json.dumps({"megre": {"suffix": "GRE", "mag": {"acquisition": "mag"},
                                          "phase": {"acquisition": "phase"}}}))
    ns = parse_args([str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w"),
                     "--bids-filter-file", str(filt), "--participant-label", "01"])
    cfg = RunConfig.from_args(ns)
    assert cfg.nprocs == available_cpus()
    assert 1 <= cfg.omp_nthreads <= cfg.nprocs and cfg.mem_gb > 0
    assert cfg.bids_filters["megre"]["suffix"] == "GRE"
    assert cfg.participant_label == ("01",) and cfg.work_dir == tmp_path / "w"
    with pytest.raises(Exception):
        cfg.nprocs = 4  # frozen
    d = cfg.to_dict()
    json.dumps(d)  # serialisable
    assert d["bids_dir"] == str(bids) and d["version"] == __version__
    ps = cfg.plugin_settings(status_callback=print)
    assert ps["plugin"] == "MultiProc" and ps["plugin_args"]["n_procs"] == cfg.nprocs
    assert ps["plugin_args"]["memory_gb"] == cfg.mem_gb
    assert ps["plugin_args"]["status_callback"] is print
    assert cfg.nipype_config()["execution"]["crashdump_dir"] == str(tmp_path / "out" / "logs")
    # a short scheduler poll for the local pool only (a SLURM poll is a squeue call)
    assert cfg.nipype_config()["execution"]["poll_sleep_duration"] == 0.2
    slurm = dataclasses.replace(cfg, plugin="SLURM")
    assert "poll_sleep_duration" not in slurm.nipype_config()["execution"]


def test_roi_erosion_and_syn_metric_options(bids, tmp_path):
    base = [str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w")]
    cfg = RunConfig.from_args(parse_args(base))
    assert cfg.roi_erosion == "auto" and cfg.syn_metric == "CC"
    cfg = RunConfig.from_args(parse_args(base + ["--roi-erosion", "2", "--syn-metric", "mattes"]))
    assert cfg.roi_erosion == 2 and cfg.syn_metric == "mattes"
    assert RunConfig.from_args(parse_args(base + ["--roi-erosion", "AUTO"])).roi_erosion == "auto"
    for bad in (["--roi-erosion", "-1"], ["--roi-erosion", "one"], ["--syn-metric", "demons"]):
        assert _exit_code(base + bad) == 64


def test_syn_region_option(bids, tmp_path):
    """--syn-region: labels by default, brain by default with --output-spaces, and labels
    together with --output-spaces refused (those outputs need the whole-brain warp)."""
    base = [str(bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w")]
    spaces = ["--output-spaces", "MNI152NLin2009cAsym:res-2"]
    assert RunConfig.from_args(parse_args(base)).syn_region == "labels"
    assert RunConfig.from_args(parse_args(base + spaces)).syn_region == "brain"
    assert RunConfig.from_args(parse_args(base + ["--syn-region", "brain"])).syn_region == "brain"
    with pytest.raises(UsageError, match="--syn-region brain"):
        RunConfig.from_args(parse_args(base + spaces + ["--syn-region", "labels"]))
    assert _exit_code(base + ["--syn-region", "dgm"]) == 64


def test_runconfig_never_oversubscribes(bids, tmp_path):
    ns = parse_args([str(bids), str(tmp_path / "out"), "participant", "--nprocs", "1", "--omp-nthreads", "4"])
    with pytest.raises(UsageError) as exc:
        RunConfig.from_args(ns)
    assert exc.value.exit_code == 64 and "--omp-nthreads 4 exceeds --nprocs 1" in str(exc.value)
    ns = parse_args([str(bids), str(tmp_path / "out"), "participant", "--nprocs", "1"])
    assert RunConfig.from_args(ns).omp_nthreads == 1


@pytest.mark.parametrize("nprocs, omp", [(1, 1), (2, 1), (3, 2), (4, 3), (9, 8), (64, 8)])
def test_default_omp_nthreads_leaves_a_cpu_free(bids, tmp_path, nprocs, omp):
    """fMRIPrep's rule: a registration node never holds every slot of the run."""
    ns = parse_args([str(bids), str(tmp_path / "out"), "participant", "--nprocs", str(nprocs)])
    assert RunConfig.from_args(ns).omp_nthreads == omp
    ns = parse_args([str(bids), str(tmp_path / "out"), "participant", "--nprocs", str(nprocs),
                     "--omp-nthreads", str(nprocs)])
    assert RunConfig.from_args(ns).omp_nthreads == nprocs  # an explicit value is kept


def test_runconfig_bad_filter_file_64(bids, tmp_path):
    filt = tmp_path / "filters.json"
    filt.write_text(json.dumps({"bold": {"task": "rest"}}))
    ns = parse_args([str(bids), str(tmp_path / "out"), "participant", "--bids-filter-file", str(filt)])
    with pytest.raises(UsageError, match="unknown key"):
        RunConfig.from_args(ns)


def test_plugin_args_override(bids, tmp_path):
    ns = parse_args([str(bids), str(tmp_path / "out"), "participant", "--plugin", "SLURM",
                     "--plugin-args", '{"sbatch_args": "-p short"}', "--nprocs", "2"])
    cfg = RunConfig.from_args(ns)
    # SLURM does not call status callbacks: none is passed to it
    assert cfg.plugin_settings(status_callback=print) == {
        "plugin": "SLURM", "plugin_args": {"sbatch_args": "-p short"}}


def test_cli_process_exit_codes(bids, tmp_path):
    """The exit status of the real ``qsmprep`` process (the console script's ``main``), for
    an argparse error (64), an unknown level (17) and a qsmprep error raised after parsing
    (66, missing input): fails if main() lets argparse's 2 or a traceback's 1 through."""
    def run(*args):
        return subprocess.run([sys.executable, "-m", "qsmprep.cli.run", *map(str, args)],
                              capture_output=True, text=True)

    assert run(bids, tmp_path / "o", "participant", "--bogus").returncode == 64
    assert run(bids, tmp_path / "o", "grup").returncode == 17
    r = run(tmp_path / "missing", tmp_path / "o", "participant")
    assert r.returncode == 66 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_usage_doc_lists_every_method_and_exit_code():
    """docs/usage.md lists exactly the registered methods of each step (fails when a record is
    added without its docs line, or a docs line names a method that is not registered) and
    every exit code."""
    import re

    from qsmprep.qsm import methods

    doc = (REPO_ROOT / "docs" / "usage.md").read_text()
    for opt in METHOD_OPTIONS:
        row = next(line for line in doc.splitlines() if line.startswith(f"| `--{opt.replace('_', '-')}`"))
        listed = set(re.findall(r"`([a-z0-9_-]+)`", row.split("|")[2]))
        assert listed == set(methods.names(opt)), opt
    for code in (16, 17, 18, 64, 65, 66, 73):
        assert f"| {code} |" in doc


def test_config_module_does_not_import_the_cli():
    """The configuration is below the command line: ``qsmprep/config.py`` imports nothing
    from ``qsmprep.cli`` (fails if the upward import comes back)."""
    import ast

    import qsmprep.config as config_module

    tree = ast.parse(Path(config_module.__file__).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names]
    assert not [m for m in imported if m.startswith(("cli", ".cli", "qsmprep.cli"))], imported
