"""The CircleCI configuration is valid YAML with a consistent structure.

CircleCI itself cannot run here; these checks catch what would make it reject or misrun the
config: undefined jobs/executors/commands, undeclared parameters, missing files, the data cache
not keyed on the checksum file, and data mounted writable. The YAML is parsed and the shell
text of the reusable commands is expanded with each job's parameters, as CircleCI does, so the
checks read the docker mounts and the qsmprep calls that would run, not substrings of the file.
"""

import json
import re
import shlex

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


def _run_steps(job_or_cmd):
    """The ``run`` steps of a job or command as ``(name, command text)``."""
    for step in _steps(job_or_cmd):
        if isinstance(step, dict) and "run" in step:
            run = step["run"]
            yield (None, run) if isinstance(run, str) else (run.get("name"), run["command"])


def _expand(cfg, command_name, given):
    """The shell text of a reusable command with its parameters filled in as CircleCI does."""
    declared = cfg["commands"][command_name].get("parameters", {})
    values = {p: str((given or {}).get(p, spec.get("default", ""))) for p, spec in declared.items()}
    texts = [c for _, c in _run_steps(cfg["commands"][command_name])]
    return [re.sub(r"<<\s*parameters\.(\w+)\s*>>", lambda m: values[m.group(1)], t)
            for t in texts]


def _docker_mounts(tokens):
    """``{container path: (host path, options)}`` of the ``-v`` options of a docker command."""
    mounts = {}
    for flag, value in zip(tokens, tokens[1:]):
        if flag == "-v":
            host, container, *opts = value.split(":")
            mounts[container] = (host, opts)
    return mounts


def test_image_built_by_the_repo_script_and_handed_over(cfg):
    """build_image runs scripts/build_image.sh and persists the file load_image loads.

    Fails if the image is built another way, or if the saved and the loaded archive differ
    (the dataset jobs would then run without an image).
    """
    build = cfg["jobs"]["build_image"]
    lines = [ln.strip() for _, c in _run_steps(build) for ln in c.splitlines()]
    assert any(shlex.split(ln)[-2:] == ["bash", "scripts/build_image.sh"] for ln in lines if ln)
    persist = next(s["persist_to_workspace"] for s in _steps(build)
                   if isinstance(s, dict) and "persist_to_workspace" in s)
    saved = {f"{persist['root']}/{p}" for p in persist["paths"]}
    attach = next(s["attach_workspace"] for s in _steps(cfg["commands"]["load_image"])
                  if isinstance(s, dict) and "attach_workspace" in s)
    assert attach["at"] == persist["root"]
    loaded = set(re.findall(r"gunzip -c (\S+)", _expand(cfg, "load_image", {})[0]))
    assert loaded and loaded <= saved


def test_data_cache_keyed_on_the_checksum_file(cfg):
    """fetch_data restores and saves ~/ci-data under one key built from the checksum file.

    Fails if the key no longer changes with workflows/ci/checksums.sha256 (stale data would be
    reused) or if restore and save use different keys (the cache would never hit).
    """
    steps = _steps(cfg["jobs"]["fetch_data"])
    restore = [s["restore_cache"] for s in steps if isinstance(s, dict) and "restore_cache" in s]
    save = [s["save_cache"] for s in steps if isinstance(s, dict) and "save_cache" in s]
    assert len(restore) == 1 and len(save) == 1
    key = save[0]["key"]
    assert re.search(r'\{\{\s*checksum "workflows/ci/checksums\.sha256"\s*\}\}', key)
    assert key in restore[0]["keys"]
    assert "~/ci-data" in save[0]["paths"]
    # the fetch script reads the open bucket anonymously (CI has no AWS credentials)
    script = (ROOT / "workflows/ci/fetch_ds000221.sh").read_text().splitlines()
    commands = [ln.strip().removeprefix("if ").rstrip("\\") for ln in script]
    sync = [shlex.split(c) for c in commands if c.startswith("aws s3 sync")]
    assert sync and all("--no-sign-request" in tokens for tokens in sync)


@pytest.mark.parametrize("job", ["sim_cohort", "ds000221", "qsmxt"])
def test_dataset_jobs_run_both_levels_on_read_only_data(cfg, job):
    """Each data set job loads the image, then runs the participant and the group level on
    the data mounted read-only, with one work folder; the jobs wait for what they read.

    Fails if a level is dropped or reordered, /data becomes writable, the levels use
    different work folders, a job can start before the image (or the data) exists, or the
    ds000221 filter file is not the one in workflows/ci (mounted at /ci).
    """
    steps = _steps(cfg["jobs"][job])
    names = [_step_name(s) for s in steps]
    assert "load_image" in names and "run_qsmprep" in names
    assert names.index("load_image") < names.index("run_qsmprep")
    given = next(s["run_qsmprep"] for s in steps if _step_name(s) == "run_qsmprep")
    run_text = _expand(cfg, "run_qsmprep", given)[0]
    func = re.search(r"run_q\(\)\s*\{(.*?)\n\s*\}", run_text, flags=re.S).group(1)
    docker = shlex.split(func.replace("\\\n", " "))
    mounts = _docker_mounts(docker)
    assert mounts["/data"] == (given["data"], ["ro"])
    assert mounts["/ci"][1] == ["ro"] and mounts["/ci"][0].endswith("/qsmprep/workflows/ci")
    assert mounts["/out"][1] == [] and mounts["/work"][1] == []
    assert docker[-3:] == ["/data", "/out", "$@"]  # positional BIDS_DIR OUTPUT_DIR, then the level
    calls = [shlex.split(ln.strip())[1:] for ln in run_text.splitlines()
             if ln.strip().startswith("time run_q ")]
    assert [c[1] for c in calls] == ["participant", "group"]
    for call in calls:
        assert call[call.index("-w") + 1] == "/work"
    extra = calls[0][calls[0].index("--mem-gb") + 2:]
    assert extra == shlex.split(given.get("extra", ""))
    if "--bids-filter-file" in extra:
        filt = extra[extra.index("--bids-filter-file") + 1]
        assert filt.startswith("/ci/") and (ROOT / "workflows/ci" / filt[4:]).is_file()
    requires = next(e[job] for e in cfg["workflows"]["qsmprep"]["jobs"]
                    if isinstance(e, dict) and job in e)["requires"]
    assert "build_image" in requires
    if "ci-data" in given["data"]:
        assert "fetch_data" in requires


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
    from qsmprep.bids import load_bids_filters

    loaded = load_bids_filters(ROOT / "workflows/ci/ds000221_filter.json")
    assert loaded["megre"]["mag"] == {"acquisition": "mag"}
    assert loaded["megre"]["phase"] == {"acquisition": "phase"}
