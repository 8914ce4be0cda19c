"""The CircleCI configuration is valid YAML with a consistent structure.

CircleCI itself cannot run here; these checks catch what would make it reject or misrun the
config: undefined jobs/executors/commands, undeclared parameters, missing files, the data cache
not keyed on the checksum file, and data mounted writable.
"""

import json
import re

import pytest
from tests._paths import REPO_ROOT

yaml = pytest.importorskip("yaml")

ROOT = REPO_ROOT
CONFIG = ROOT / ".circleci" / "config.yml"


@pytest.fixture(scope="module")
def cfg():
    return yaml.safe_load(CONFIG.read_text())


def _steps(job_or_cmd):
    return job_or_cmd.get("steps", [])


def _step_name(step):
    return step if isinstance(step, str) else next(iter(step))


def _all_commands(cfg):
    for name, job in cfg["jobs"].items():
        for step in _steps(job):
            if isinstance(step, dict) and "run" in step:
                run = step["run"]
                yield name, run if isinstance(run, str) else run["command"]
    for name, cmd in cfg.get("commands", {}).items():
        for step in _steps(cmd):
            if isinstance(step, dict) and "run" in step:
                run = step["run"]
                yield name, run if isinstance(run, str) else run["command"]


def test_top_level(cfg):
    assert str(cfg["version"]) == "2.1"
    assert set(cfg) <= {"version", "executors", "commands", "jobs", "workflows", "orbs",
                        "parameters"}
    assert cfg["jobs"] and cfg["workflows"]


def test_jobs_use_defined_executors_and_commands(cfg):
    builtin = {"checkout", "run", "restore_cache", "save_cache", "persist_to_workspace",
               "attach_workspace", "store_artifacts", "store_test_results",
               "setup_remote_docker", "add_ssh_keys", "when", "unless"}
    defined = set(cfg.get("commands", {}))
    for name, job in list(cfg["jobs"].items()) + list(cfg.get("commands", {}).items()):
        if "executor" in job:
            assert job["executor"] in cfg["executors"], f"{name}: unknown executor"
        for step in _steps(job):
            sname = _step_name(step)
            assert sname in builtin | defined, f"{name}: unknown step {sname}"
            if sname in defined and isinstance(step, dict):
                declared = set(cfg["commands"][sname].get("parameters", {}))
                given = set(step[sname] or {})
                required = {p for p, spec in cfg["commands"][sname].get("parameters", {}).items()
                            if "default" not in spec}
                assert given <= declared, f"{name}: {sname} got undeclared {given - declared}"
                assert required <= given, f"{name}: {sname} misses {required - given}"


def test_command_parameters_are_declared(cfg):
    for name, cmd in cfg.get("commands", {}).items():
        text = yaml.safe_dump(cmd)
        used = set(re.findall(r"<<\s*parameters\.(\w+)\s*>>", text))
        assert used <= set(cmd.get("parameters", {})), f"command {name} uses {used}"
    for name, job in cfg["jobs"].items():
        text = yaml.safe_dump(job)
        used = set(re.findall(r"<<\s*parameters\.(\w+)\s*>>", text))
        assert used <= set(job.get("parameters", {})), f"job {name} uses {used}"


def test_workflow_graph(cfg):
    for wname, wf in cfg["workflows"].items():
        if wname == "version":
            continue
        names = []
        for entry in wf["jobs"]:
            jname = entry if isinstance(entry, str) else next(iter(entry))
            assert jname in cfg["jobs"], f"workflow {wname}: undefined job {jname}"
            names.append(jname)
        for entry in wf["jobs"]:
            if isinstance(entry, dict):
                jname = next(iter(entry))
                for req in (entry[jname] or {}).get("requires", []):
                    assert req in names, f"{jname} requires {req}, not in workflow {wname}"
    # every job runs in some workflow
    used = {e if isinstance(e, str) else next(iter(e))
            for wf in cfg["workflows"].values() if isinstance(wf, dict) for e in wf["jobs"]}
    assert used == set(cfg["jobs"])


def test_issue_requirements(cfg):
    jobs = cfg["jobs"]
    text = CONFIG.read_text()
    # the image is built with the repo's script, and each dataset job needs the image
    assert any("scripts/build_image.sh" in c for _, c in _all_commands(cfg))
    # data cache keyed on the checksum file, restored and saved with the same key
    restore = [s["restore_cache"] for s in _steps(jobs["fetch_data"])
               if isinstance(s, dict) and "restore_cache" in s]
    save = [s["save_cache"] for s in _steps(jobs["fetch_data"])
            if isinstance(s, dict) and "save_cache" in s]
    assert restore and save
    key = save[0]["key"]
    assert '{{ checksum "workflows/ci/checksums.sha256" }}' in key
    assert key in restore[0]["keys"]
    # participant and group levels for the three data sets, /data read-only
    for job in ("sim_cohort", "ds000221", "qsmxt"):
        assert any(_step_name(s) == "run_qsmprep" for s in _steps(jobs[job])), job
    assert "participant" in text and "group" in text
    assert ":/data:ro" in text
    assert "--bids-filter-file /ci/ds000221_filter.json" in text
    assert "aws s3 sync --no-sign-request" in (ROOT / "workflows/ci/fetch_ds000221.sh").read_text()


def test_referenced_repo_files_exist(cfg):
    for name, cmd in _all_commands(cfg):
        for path in re.findall(r"(?:bash|python3?)\s+((?:scripts|workflows)/[\w./-]+)", cmd):
            assert (ROOT / path).is_file(), f"{name}: {path} does not exist"
        for path in re.findall(r"/ci/([\w.-]+)", cmd):
            assert (ROOT / "workflows" / "ci" / path).is_file(), f"{name}: workflows/ci/{path}"
    assert (ROOT / "workflows/ci/checksums.sha256").is_file()
    assert (ROOT / "Dockerfile").is_file()


def test_ds000221_filter_is_accepted_by_qsmprep():
    filt = json.loads((ROOT / "workflows/ci/ds000221_filter.json").read_text())
    assert filt["megre"]["suffix"] == "GRE"
    bids = pytest.importorskip("qsmprep.bids")
    loaded = bids.load_bids_filters(ROOT / "workflows/ci/ds000221_filter.json")
    assert loaded["megre"]["mag"] == {"acquisition": "mag"}
    assert loaded["megre"]["phase"] == {"acquisition": "phase"}
