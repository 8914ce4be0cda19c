"""The method registry (qsmprep/qsm/methods.py): one record per method, read by every consumer."""

import importlib
import inspect
import itertools
import subprocess
import sys

import pytest

from qsmprep.qsm import methods
from qsmprep.qsm.pipeline import QSMOptions, consensus_report, method_parameters


def test_every_record_resolves_to_a_function_of_its_step_module():
    """``func`` strings are only imported when a method runs: a typo would surface mid-run.
    Fails when a record names a function that does not exist in its step's module, or when a
    module's ``METHODS`` stops being the view of the records."""
    for m in methods.REGISTRY:
        module = f"qsmprep.qsm.{methods.STEP_MODULES[m.step]}"
        assert m.func.startswith(module + ":"), m.func
        assert callable(m.load()), m.func
    for step, module in methods.STEP_MODULES.items():
        mod = importlib.import_module(f"qsmprep.qsm.{module}")
        assert list(mod.METHODS) == list(methods.names(step))
        assert mod.DEFAULT == methods.default(step)
        assert all(mod.METHODS[m.name] is m.load() for m in methods.methods(step))


_DATA_ARGS = {"mag", "phase", "tes", "voxel_size", "phase4d", "mag4d", "mask", "unwrapping",
              "total_ppm", "b0_dir", "weights", "local_ppm", "magnitude", "chi", "ref_mask",
              "wrapped", "info", "field_hz"}


def _signature_defaults(func):
    """The provenance the sidecar held before the records (signature introspection)."""
    out = {}
    for pname, param in inspect.signature(func).parameters.items():
        if pname in _DATA_ARGS or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if param.default is inspect.Parameter.empty:
            continue
        val = param.default
        if isinstance(val, (bool, int, float, str)) or val is None:
            out[pname] = val
        elif isinstance(val, (tuple, list)) and all(isinstance(v, (int, float, str)) for v in val):
            out[pname] = list(val)
    return out


@pytest.mark.parametrize("rec", [m for m in methods.REGISTRY if m.step != "masking"],
                         ids=lambda m: f"{m.step}-{m.name}")
def test_record_parameters_equal_the_function_defaults(rec):
    """The recorded ``Parameters`` (sidecar) equal the function's keyword defaults: fails when a
    default changes in the function but not in its record (or the reverse), so a sidecar would
    state a value that did not run."""
    assert method_parameters(rec.step, rec.name) == _signature_defaults(rec.load())


def test_masking_parameters_are_those_of_the_wrapped_functions():
    """The masking methods are ``**opts`` adapters (introspection gave ``{}``); their records list
    the options of mask_magnitude / mask_phase_quality with the same defaults. Fails when a
    listed option does not exist there or has another default."""
    from qsmprep.qsm import masking

    mag_defaults = {k: p.default for k, p in inspect.signature(masking.mask_magnitude).parameters.items()
                    if p.default is not inspect.Parameter.empty}
    pq_defaults = {k: p.default for k, p in
                   inspect.signature(masking.mask_phase_quality).parameters.items()
                   if p.default is not inspect.Parameter.empty}
    assert dict(methods.get("masking", "magnitude").parameters) == mag_defaults
    pq = dict(methods.get("masking", "phase-quality").parameters)
    pq_own = {k: v for k, v in pq_defaults.items() if k not in ("base_mask", "return_quality")}
    assert pq == {**{k: v for k, v in mag_defaults.items() if k != "fill"}, **pq_own}


def test_desc_labels_are_alphanumeric_and_checked_at_import():
    """BIDS entity values allow letters and digits only: ``tv_admm`` -> ``tvadmm`` and a hyphenated
    name gets a valid label; a record with a bad label is refused (fails if _validate stops
    checking)."""
    assert methods.desc("inversion", "tv_admm") == "tvadmm"
    assert methods.desc("masking", "phase-quality") == "phasequality"
    assert all(m.desc.isalnum() for m in methods.REGISTRY)
    bad = methods.Method(name="tv-x", step="inversion", func="qsmprep.qsm.inversion:tkd",
                         desc="tv-x", summary="s", default=False)
    with pytest.raises(ValueError, match="alphanumeric"):
        methods._validate(methods.REGISTRY + (bad,))
    twice = methods.Method(name="x", step="inversion", func="qsmprep.qsm.inversion:tkd",
                           desc="x", summary="s", default=True)
    with pytest.raises(ValueError, match="one default"):
        methods._validate(methods.REGISTRY + (twice,))


#: the consensus table before the records held the flags (oracle for identical results)
_OLD_CONSENSUS = [
    lambda o: o.combination in ("nonlinear", "linear"),
    lambda o: o.unwrapping != "laplacian",
    lambda o: o.masking not in ("magnitude",),
    lambda o: o.bf_removal in ("vsharp", "pdf", "resharp", "lbv", "sharp", "auto"),
    lambda o: o.inversion in ("tv_admm", "medi", "rts"),
    lambda o: o.reference != "none",
]


def test_consensus_report_identical_to_the_former_table():
    """Every combination of registered methods (and unregistered names such as a ``user`` mask)
    gets the verdicts of the former lambda table; fails when a record's consensus flag is
    wrong or missing."""
    steps = ("masking", "combination", "unwrapping", "bf_removal", "inversion", "reference")
    choices = [methods.names(s) + ("user",) for s in steps]
    for combo in itertools.product(*choices):
        opts = QSMOptions(**dict(zip(steps, combo)))
        got = [item["follows"] for item in consensus_report(opts)]
        assert got == [bool(f(opts)) for f in _OLD_CONSENSUS], combo


def test_csf_reference_is_the_only_method_needing_a_reference_mask():
    """The one place that says a method needs a reference-region mask (fails if the flag is
    lost: CSF referencing would then run without any CSF mask)."""
    assert [m.name for m in methods.REGISTRY if "ref_mask" in m.needs] == ["csf"]


def test_reading_the_registry_imports_no_numerics():
    """Building choices/defaults/help needs the table only: fails when methods.py imports numpy
    (or a step module) at import time."""
    code = ("import sys\nfrom qsmprep.qsm import methods\nmethods.names('inversion')\n"
            "print(','.join(m for m in ('numpy', 'scipy', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        methods.get("inversion", "nope")
    with pytest.raises(KeyError):
        importlib.import_module("qsmprep.qsm.inversion").METHODS["nope"]
