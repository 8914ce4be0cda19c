"""``logs/CITATION.md`` and ``logs/CITATION.bib``: cite every method and tool that ran.

One table of references (:data:`REFERENCES`, BibTeX fields keyed by a citation key) feeds both
files; each method's keys are the ``references`` of its record in the method registry
(:data:`qsmprep.qsm.methods.REGISTRY`; :data:`METHOD_REFERENCES` is a view of them), the same
papers the method functions' docstrings name.
:data:`TOOL_REFERENCES` lists the software that always runs and :data:`ATLAS_REFERENCES` the
sources of the default atlas. A user atlas (``--atlas DIR``) is cited from the ``Citation`` text
of each ``Sources`` entry of its ``dataset_description.json``.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import __version__
from ..qsm.methods import CLI_STEPS, REGISTRY, STEP_WORDS
from ..qsm.methods import find as find_method

#: citation key -> (BibTeX entry type, fields). Authors in BibTeX form ("Last, F. and ...").
REFERENCES: dict[str, tuple[str, dict]] = {
    "qsmconsensus2024": ("article", {
        "author": "{QSM Consensus Organization Committee} and Bilgic, B. and Costagli, M. and "
                  "Chan, K.-S. and Duyn, J. and Langkammer, C. and Lee, J. and Li, X. and "
                  "Liu, C. and Marques, J. P. and Milovic, C. and Robinson, S. D. and "
                  "Schweser, F. and Shmueli, K. and Spincemaille, P. and Straub, S. and "
                  "van Zijl, P. and Wang, Y.",
        "title": "Recommended implementation of quantitative susceptibility mapping for clinical "
                 "research in the brain: a consensus of the ISMRM electro-magnetic tissue "
                 "properties study group",
        "journal": "Magnetic Resonance in Medicine", "year": "2024", "volume": "91",
        "pages": "1834--1862", "doi": "10.1002/mrm.30006"}),
    "stewart2022qsmxt": ("article", {
        "author": "Stewart, A. W. and Robinson, S. D. and O'Brien, K. and Jin, J. and "
                  "Widhalm, G. and Hangel, G. and Walls, A. and Goodwin, J. and Eckstein, K. and "
                  "Tourell, M. and Morgan, C. and Narayanan, A. and Barth, M. and Bollmann, S.",
        "title": "QSMxT: Robust masking and artifact reduction for quantitative susceptibility "
                 "mapping",
        "journal": "Magnetic Resonance in Medicine", "year": "2022", "volume": "87",
        "pages": "1289--1300", "doi": "10.1002/mrm.29048"}),
    "dymerska2021romeo": ("article", {
        "author": "Dymerska, B. and Eckstein, K. and Bachrata, B. and Siow, B. and "
                  "Trattnig, S. and Shmueli, K. and Robinson, S. D.",
        "title": "Phase unwrapping with a rapid opensource minimum spanning tree algorithm "
                 "({ROMEO})",
        "journal": "Magnetic Resonance in Medicine", "year": "2021", "volume": "85",
        "pages": "2294--2308", "doi": "10.1002/mrm.28563"}),
    "liu2013nonlinear": ("article", {
        "author": "Liu, T. and Wisnieff, C. and Lou, M. and Chen, W. and Spincemaille, P. and "
                  "Wang, Y.",
        "title": "Nonlinear formulation of the magnetic field to source relationship for robust "
                 "quantitative susceptibility mapping",
        "journal": "Magnetic Resonance in Medicine", "year": "2013", "volume": "69",
        "pages": "467--476", "doi": "10.1002/mrm.24272"}),
    "eckstein2018mcpc3ds": ("article", {
        "author": "Eckstein, K. and Dymerska, B. and Bachrata, B. and Bogner, W. and "
                  "Poljanc, K. and Trattnig, S. and Robinson, S. D.",
        "title": "Computationally efficient combination of multi-channel phase data from "
                 "multi-echo acquisitions ({ASPIRE})",
        "journal": "Magnetic Resonance in Medicine", "year": "2018", "volume": "79",
        "pages": "2996--3006", "doi": "10.1002/mrm.26963"}),
    "schofield2003laplacian": ("article", {
        "author": "Schofield, M. A. and Zhu, Y.",
        "title": "Fast phase unwrapping algorithm for interferometric applications",
        "journal": "Optics Letters", "year": "2003", "volume": "28", "pages": "1194--1196",
        "doi": "10.1364/OL.28.001194"}),
    "herraez2002unwrap": ("article", {
        "author": "Herr{\\'a}ez, M. A. and Burton, D. R. and Lalor, M. J. and Gdeisat, M. A.",
        "title": "Fast two-dimensional phase-unwrapping algorithm based on sorting by "
                 "reliability following a noncontinuous path",
        "journal": "Applied Optics", "year": "2002", "volume": "41", "pages": "7437--7444",
        "doi": "10.1364/AO.41.007437"}),
    "abdulrahman2007unwrap": ("article", {
        "author": "Abdul-Rahman, H. S. and Gdeisat, M. A. and Burton, D. R. and Lalor, M. J. and "
                  "Lilley, F. and Moore, C. J.",
        "title": "Fast and robust three-dimensional best path phase unwrapping algorithm",
        "journal": "Applied Optics", "year": "2007", "volume": "46", "pages": "6623--6635",
        "doi": "10.1364/AO.46.006623"}),
    "li2011vsharp": ("article", {
        "author": "Li, W. and Wu, B. and Liu, C.",
        "title": "Quantitative susceptibility mapping of human brain reflects spatial variation "
                 "in tissue composition",
        "journal": "NeuroImage", "year": "2011", "volume": "55", "pages": "1645--1656",
        "doi": "10.1016/j.neuroimage.2010.11.088"}),
    "schweser2011sharp": ("article", {
        "author": "Schweser, F. and Deistung, A. and Lehr, B. W. and Reichenbach, J. R.",
        "title": "Quantitative imaging of intrinsic magnetic tissue properties using MRI signal "
                 "phase: an approach to in vivo brain iron metabolism?",
        "journal": "NeuroImage", "year": "2011", "volume": "54", "pages": "2789--2807",
        "doi": "10.1016/j.neuroimage.2010.10.070"}),
    "liu2011pdf": ("article", {
        "author": "Liu, T. and Khalidov, I. and de Rochefort, L. and Spincemaille, P. and "
                  "Liu, J. and Tsiouris, A. J. and Wang, Y.",
        "title": "A novel background field removal method for MRI using projection onto dipole "
                 "fields ({PDF})",
        "journal": "NMR in Biomedicine", "year": "2011", "volume": "24", "pages": "1129--1136",
        "doi": "10.1002/nbm.1670"}),
    "sun2014resharp": ("article", {
        "author": "Sun, H. and Wilman, A. H.",
        "title": "Background field removal using spherical mean value filtering and Tikhonov "
                 "regularization",
        "journal": "Magnetic Resonance in Medicine", "year": "2014", "volume": "71",
        "pages": "1151--1157", "doi": "10.1002/mrm.24765"}),
    "zhou2014lbv": ("article", {
        "author": "Zhou, D. and Liu, T. and Spincemaille, P. and Wang, Y.",
        "title": "Background field removal by solving the {L}aplacian boundary value problem",
        "journal": "NMR in Biomedicine", "year": "2014", "volume": "27", "pages": "312--319",
        "doi": "10.1002/nbm.3064"}),
    "shmueli2009tkd": ("article", {
        "author": "Shmueli, K. and de Zwart, J. A. and van Gelderen, P. and Li, T.-Q. and "
                  "Dodd, S. J. and Duyn, J. H.",
        "title": "Magnetic susceptibility mapping of brain tissue in vivo using MRI phase data",
        "journal": "Magnetic Resonance in Medicine", "year": "2009", "volume": "62",
        "pages": "1510--1522", "doi": "10.1002/mrm.22135"}),
    "bilgic2014fast": ("article", {
        "author": "Bilgic, B. and Fan, A. P. and Polimeni, J. R. and Cauley, S. F. and "
                  "Bianciardi, M. and Adalsteinsson, E. and Wald, L. L. and Setsompop, K.",
        "title": "Fast quantitative susceptibility mapping with L1-regularization and automatic "
                 "parameter selection",
        "journal": "Magnetic Resonance in Medicine", "year": "2014", "volume": "72",
        "pages": "1444--1459", "doi": "10.1002/mrm.25029"}),
    "kressler2010nonlinear": ("article", {
        "author": "Kressler, B. and de Rochefort, L. and Liu, T. and Spincemaille, P. and "
                  "Jiang, Q. and Wang, Y.",
        "title": "Nonlinear regularization for per voxel estimation of magnetic susceptibility "
                 "distributions from MRI field maps",
        "journal": "IEEE Transactions on Medical Imaging", "year": "2010", "volume": "29",
        "pages": "273--281", "doi": "10.1109/TMI.2009.2023787"}),
    "li2015ilsqr": ("article", {
        "author": "Li, W. and Wang, N. and Yu, F. and Han, H. and Cao, W. and Romero, R. and "
                  "Tantiwongkosi, B. and Duong, T. Q. and Liu, C.",
        "title": "A method for estimating and removing streaking artifacts in quantitative "
                 "susceptibility mapping",
        "journal": "NeuroImage", "year": "2015", "volume": "108", "pages": "111--122",
        "doi": "10.1016/j.neuroimage.2014.12.043"}),
    "milovic2018fansi": ("article", {
        "author": "Milovic, C. and Bilgic, B. and Zhao, B. and Acosta-Cabronero, J. and "
                  "Tejos, C.",
        "title": "Fast nonlinear susceptibility inversion with variational regularization",
        "journal": "Magnetic Resonance in Medicine", "year": "2018", "volume": "80",
        "pages": "814--821", "doi": "10.1002/mrm.27073"}),
    "milovic2022l1qsm": ("article", {
        "author": "Milovic, C. and Lambert, M. and Langkammer, C. and Bredies, K. and "
                  "Irarrazaval, P. and Tejos, C.",
        "title": "Streaking artifact suppression of quantitative susceptibility mapping "
                 "reconstructions via L1-norm data fidelity optimization (L1-QSM)",
        "journal": "Magnetic Resonance in Medicine", "year": "2022", "volume": "87",
        "pages": "457--473", "doi": "10.1002/mrm.28957"}),
    "liu2011medi": ("article", {
        "author": "Liu, T. and Liu, J. and de Rochefort, L. and Spincemaille, P. and "
                  "Khalidov, I. and Ledoux, J. R. and Wang, Y.",
        "title": "Morphology enabled dipole inversion ({MEDI}) from a single-angle acquisition: "
                 "comparison with {COSMOS} in human brain imaging",
        "journal": "Magnetic Resonance in Medicine", "year": "2011", "volume": "66",
        "pages": "777--783", "doi": "10.1002/mrm.22816"}),
    "liu2012medi": ("article", {
        "author": "Liu, J. and Liu, T. and de Rochefort, L. and Ledoux, J. and Khalidov, I. and "
                  "Chen, W. and Tsiouris, A. J. and Wisnieff, C. and Spincemaille, P. and "
                  "Prince, M. R. and Wang, Y.",
        "title": "Morphology enabled dipole inversion for quantitative susceptibility mapping "
                 "using structural consistency between the magnitude image and the "
                 "susceptibility map",
        "journal": "NeuroImage", "year": "2012", "volume": "59", "pages": "2560--2568",
        "doi": "10.1016/j.neuroimage.2011.08.082"}),
    "kames2018rts": ("article", {
        "author": "Kames, C. and Wiggermann, V. and Rauscher, A.",
        "title": "Rapid two-step dipole inversion for susceptibility mapping with sparsity "
                 "priors",
        "journal": "NeuroImage", "year": "2018", "volume": "167", "pages": "276--283",
        "doi": "10.1016/j.neuroimage.2017.11.018"}),
    "straub2017reference": ("article", {
        "author": "Straub, S. and Schneider, T. M. and Emmerich, J. and Freitag, M. T. and "
                  "Ziener, C. H. and Schlemmer, H.-P. and Ladd, M. E. and Laun, F. B.",
        "title": "Suitable reference tissues for quantitative susceptibility mapping of the "
                 "brain",
        "journal": "Magnetic Resonance in Medicine", "year": "2017", "volume": "78",
        "pages": "204--214", "doi": "10.1002/mrm.26369"}),
    "avants2008syn": ("article", {
        "author": "Avants, B. B. and Epstein, C. L. and Grossman, M. and Gee, J. C.",
        "title": "Symmetric diffeomorphic image registration with cross-correlation: evaluating "
                 "automated labeling of elderly and neurodegenerative brain",
        "journal": "Medical Image Analysis", "year": "2008", "volume": "12", "pages": "26--41",
        "doi": "10.1016/j.media.2007.06.004"}),
    "tustison2021antsx": ("article", {
        "author": "Tustison, N. J. and Cook, P. A. and Holbrook, A. J. and Johnson, H. J. and "
                  "Muschelli, J. and Devenyi, G. A. and Duda, J. T. and Das, S. R. and "
                  "Cullen, N. C. and Gillen, D. L. and Yassa, M. A. and Stone, J. R. and "
                  "Gee, J. C. and Avants, B. B.",
        "title": "The {ANTsX} ecosystem for quantitative biological and medical imaging",
        "journal": "Scientific Reports", "year": "2021", "volume": "11", "pages": "9068",
        "doi": "10.1038/s41598-021-87564-6"}),
    "gorgolewski2011nipype": ("article", {
        "author": "Gorgolewski, K. and Burns, C. D. and Madison, C. and Clark, D. and "
                  "Halchenko, Y. O. and Waskom, M. L. and Ghosh, S. S.",
        "title": "Nipype: a flexible, lightweight and extensible neuroimaging data processing "
                 "framework in {P}ython",
        "journal": "Frontiers in Neuroinformatics", "year": "2011", "volume": "5",
        "pages": "13", "doi": "10.3389/fninf.2011.00013"}),
    "fonov2011icbm": ("article", {
        "author": "Fonov, V. and Evans, A. C. and Botteron, K. and Almli, C. R. and "
                  "McKinstry, R. C. and Collins, D. L. and {Brain Development Cooperative Group}",
        "title": "Unbiased average age-appropriate atlases for pediatric studies",
        "journal": "NeuroImage", "year": "2011", "volume": "54", "pages": "313--327",
        "doi": "10.1016/j.neuroimage.2010.07.033"}),
    "pauli2018cit168": ("article", {
        "author": "Pauli, W. M. and Nili, A. N. and Tyszka, J. M.",
        "title": "A high-resolution probabilistic in vivo atlas of human subcortical brain "
                 "nuclei",
        "journal": "Scientific Data", "year": "2018", "volume": "5", "pages": "180063",
        "doi": "10.1038/sdata.2018.63"}),
    "najdenovska2018thalamus": ("article", {
        "author": "Najdenovska, E. and Alem{\\'a}n-G{\\'o}mez, Y. and Battistella, G. and "
                  "Descoteaux, M. and Hagmann, P. and Jacquemont, S. and Maeder, P. and "
                  "Thiran, J.-P. and Fornari, E. and Bach Cuadra, M.",
        "title": "In-vivo probabilistic atlas of human thalamic nuclei based on "
                 "diffusion-weighted magnetic resonance imaging",
        "journal": "Scientific Data", "year": "2018", "volume": "5", "pages": "180270",
        "doi": "10.1038/sdata.2018.270"}),
    "diedrichsen2009cerebellum": ("article", {
        "author": "Diedrichsen, J. and Balsters, J. H. and Flavell, J. and Cussans, E. and "
                  "Ramnani, N.",
        "title": "A probabilistic {MR} atlas of the human cerebellum",
        "journal": "NeuroImage", "year": "2009", "volume": "46", "pages": "39--46",
        "doi": "10.1016/j.neuroimage.2009.01.045"}),
}

#: (step, method name) -> citation keys, read from the method records (every key must be in
#: :data:`REFERENCES`; tests check it).
METHOD_REFERENCES: dict[tuple[str, str], list[str]] = {
    (m.step, m.name): list(m.references) for m in REGISTRY if m.step in CLI_STEPS}

#: Software that runs in every participant run.
TOOL_REFERENCES = {
    "ANTs / antspyx (registration)": ["avants2008syn", "tustison2021antsx"],
    "Nipype (workflow engine)": ["gorgolewski2011nipype"],
}

#: Sources of the default atlas (``qsmprep.atlas``), by role.
ATLAS_REFERENCES = {
    "template": ["fonov2011icbm"],
    "cit168": ["pauli2018cit168"],
    "thalamus_hcp": ["najdenovska2018thalamus"],
    "diedrichsen": ["diedrichsen2009cerebellum"],
}

#: The steps cited in the methods text, in chain order (the command-line steps).
STEPS = CLI_STEPS


def method_keys(options) -> dict[str, list[str]]:
    """Citation keys of each step's selected method.

    Parameters
    ----------
    options : QSMOptions
        The chosen methods (:class:`qsmprep.qsm.pipeline.QSMOptions`).

    Returns
    -------
    dict
        Step -> citation keys (empty for a name outside the registry, e.g. a user mask).
    """
    out = {}
    for step in STEPS:
        rec = find_method(step, getattr(options, step))
        out[step] = list(rec.references) if rec is not None else []
    # an option that changes the method's model cites its own paper
    opts = (getattr(options, "method_options", None) or {}).get("inversion") or {}
    if opts.get("data_fidelity") == "l1" and out.get("inversion"):
        out["inversion"].append("milovic2022l1qsm")
    return out


def _authors_short(authors: str) -> str:
    names = [a.strip() for a in authors.split(" and ")]
    first = names[0].strip("{}").split(",")[0]
    return first if len(names) == 1 else f"{first} et al."


def _plain(text: str) -> str:
    text = text.replace("{\\'a}", "a").replace("{\\'o}", "o")
    return re.sub(r"[{}]", "", text)


def format_reference(key: str) -> str:
    """One reference as a Markdown line (authors, title, journal year;volume:pages, doi).

    Parameters
    ----------
    key : str
        Citation key in :data:`REFERENCES`.

    Returns
    -------
    str
        First author (``et al.`` when there are more), title, italic journal,
        ``year;volume:pages`` and a linked DOI, with BibTeX braces and accents removed.

    Raises
    ------
    KeyError
        If ``key`` is not in :data:`REFERENCES`.
    """
    _, f = REFERENCES[key]
    title = _plain(f["title"])
    title = title if title.endswith(("?", ".", "!")) else title + "."
    return (f"{_plain(_authors_short(f['author']))} {title} *{f['journal']}* "
            f"{f['year']};{f['volume']}:{f['pages'].replace('--', '-')}. "
            f"doi:[{f['doi']}](https://doi.org/{f['doi']})")


def bibtex_entry(key: str) -> str:
    """One reference as a BibTeX entry.

    Parameters
    ----------
    key : str
        Citation key in :data:`REFERENCES`; also the entry's key.

    Returns
    -------
    str
        ``@type{key, field = {value}, ...}`` with one field a line, ending in a newline.

    Raises
    ------
    KeyError
        If ``key`` is not in :data:`REFERENCES`.
    """
    kind, fields = REFERENCES[key]
    body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items())
    return f"@{kind}{{{key},\n{body}\n}}\n"


def _atlas_sources(atlas) -> tuple[list[str], list[str]]:
    """(citation keys, free-text citations) for the atlas that ran."""
    desc = getattr(atlas, "description", None) or {}
    sources = desc.get("Sources") or []
    is_default = str(desc.get("Name", "")).startswith("qsmprep default")
    if is_default:
        keys = list(ATLAS_REFERENCES["template"] + ATLAS_REFERENCES["cit168"]
                    + ATLAS_REFERENCES["thalamus_hcp"])
        if any("Diedrichsen" in str(s.get("Name", "")) for s in sources):
            keys += ATLAS_REFERENCES["diedrichsen"]
        return keys, []
    texts = [str(s.get("Citation")) for s in sources if isinstance(s, dict) and s.get("Citation")]
    return [], texts


def citation_texts(options, atlas, longitudinal: bool = True) -> tuple[str, str]:
    """Markdown and BibTeX text for a run with ``options`` and ``atlas``.

    The references are numbered in order of first citation, the QSM consensus paper first.

    Parameters
    ----------
    options : QSMOptions
        The chosen methods (:class:`qsmprep.qsm.pipeline.QSMOptions`).
    atlas : qsmprep.atlas.Atlas
        The atlas that ran (its ``name``, ``space``, ``directory`` and ``description``); the
        default atlas is cited from :data:`ATLAS_REFERENCES`, a user atlas from the
        ``Citation`` texts of its ``Sources``.
    longitudinal : bool
        Describe the registration as longitudinal (within-subject template) rather than
        cross-sectional.

    Returns
    -------
    markdown : str
        The methods paragraph and numbered reference list (``CITATION.md``).
    bibtex : str
        A BibTeX entry for every reference, and a ``@misc`` entry for each atlas source text
        (``CITATION.bib``).
    """
    numbers: dict[str, int] = {}

    def refs(klist):
        if not klist:
            return ""
        for k in klist:
            numbers.setdefault(k, len(numbers) + 1)
        return " [" + ", ".join(str(numbers[k]) for k in klist) + "]"

    numbers["qsmconsensus2024"] = 1
    by_step = method_keys(options)
    steps = []
    for step in STEPS:
        name = getattr(options, step)
        rec = find_method(step, name)
        how = f" ({rec.summary})" if rec is not None and name == "auto" else ""
        steps.append(f"{STEP_WORDS[step]}: `{name}`{how}{refs(by_step[step])}")
    atlas_keys, atlas_texts = _atlas_sources(atlas)
    atlas_ref = refs(atlas_keys)
    tool_lines = [f"{tool}{refs(klist)}" for tool, klist in TOOL_REFERENCES.items()]
    reg = ("longitudinal, through an unbiased within-subject template" if longitudinal
           else "cross-sectional")
    md = [
        f"# Methods (generated by qsmprep {__version__})",
        "",
        f"Quantitative susceptibility maps were reconstructed with qsmprep {__version__} from "
        "multi-echo gradient-echo magnitude and phase images, following the 2024 ISMRM "
        "consensus recommendations [1]. Steps and methods:",
        "",
        *[f"- {s}" for s in steps],
        "",
        f"Deep gray matter labels of the {atlas.name} atlas ({atlas.space}){atlas_ref} were "
        f"carried into each session with ANTs registrations ({reg}) and one resampling per "
        "session. Per-structure statistics are reported in ppb; maps are in ppm. Software: "
        + "; ".join(tool_lines) + ".",
        "",
        "## References",
        "",
    ]
    for k in sorted(numbers, key=numbers.get):
        md.append(f"{numbers[k]}. {format_reference(k)}")
    for i, text in enumerate(atlas_texts, start=len(numbers) + 1):
        md.append(f"{i}. {text} (atlas source, from the atlas's dataset_description.json)")
    md += ["", "BibTeX for every reference above: `CITATION.bib` next to this file. Atlas "
           f"licences: `{atlas.directory.name}/dataset_description.json` of the atlas used."]
    bib = [f"% References for a qsmprep {__version__} run (cite all of them)\n"]
    bib += [bibtex_entry(k) for k in sorted(numbers, key=numbers.get)]
    for i, text in enumerate(atlas_texts, start=1):
        safe = text.replace("{", "(").replace("}", ")")
        bib.append(f"@misc{{atlas_source_{i},\n  note = {{{safe}}}\n}}\n")
    return "\n".join(md) + "\n", "\n".join(bib)


def write_citation(output_dir, options, atlas, config=None) -> tuple[Path, Path]:
    """Write ``logs/CITATION.md`` and ``logs/CITATION.bib`` under ``output_dir``.

    Parameters
    ----------
    output_dir : str or Path
        The output folder; ``logs/`` is created if missing and existing files are overwritten.
    options : QSMOptions
        The chosen methods (:class:`qsmprep.qsm.pipeline.QSMOptions`).
    atlas : qsmprep.atlas.Atlas
        The atlas that ran.
    config : RunConfig or None
        Its ``longitudinal`` attribute selects the registration wording (longitudinal when
        ``config`` is ``None`` or has no such attribute).

    Returns
    -------
    md_path, bib_path : Path
        The two files written (UTF-8).
    """
    longitudinal = bool(getattr(config, "longitudinal", True)) if config is not None else True
    md, bib = citation_texts(options, atlas, longitudinal=longitudinal)
    logs = Path(output_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    md_path, bib_path = logs / "CITATION.md", logs / "CITATION.bib"
    md_path.write_text(md, encoding="utf-8")
    bib_path.write_text(bib, encoding="utf-8")
    return md_path, bib_path
