"""Group statistics (qsmprep.stats) against hand-computable cases and scipy/statsmodels."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from qsmprep import stats as S

# --------------------------------------------------------------------------------------------
# helpers


def _balanced(n_per_group=5, seed=0, effects=(10.0, 4.0, 2.0)):
    """Balanced 2 groups x 2 sessions analysis table (one structure)."""
    rng = np.random.default_rng(seed)
    g_eff, t_eff, gt_eff = effects
    rows = []
    for gi, grp in enumerate(("HC", "MS")):
        for k in range(n_per_group):
            pid = f"sub-{grp}{k}"
            base = rng.normal(50, 8) + gi * g_eff
            for t, ses in enumerate(("ses-baseline", "ses-followup")):
                y = base + t * t_eff + t * gi * gt_eff + rng.normal(0, 2)
                rows.append((pid, ses, t, grp, "caudate", "bilateral", y, 100))
    df = pd.DataFrame(rows, columns=["participant_id", "session_id", "time_index", "group", "structure",
                                     "hemisphere", "chi_ppb", "n_voxels"])
    df.attrs["session_order"] = ["ses-baseline", "ses-followup"]
    df.attrs["structures"] = ["caudate"]
    return df


def _hand_mixed_anova(df):
    """Sums of squares of a balanced a x b mixed design, by the textbook formulas."""
    y = df.pivot(index="participant_id", columns="session_id", values="chi_ppb")
    grp = df.drop_duplicates("participant_id").set_index("participant_id")["group"].reindex(y.index)
    a, b = grp.nunique(), y.shape[1]
    n = len(y) // a
    grand = y.values.mean()
    g_means = y.groupby(grp).mean().mean(axis=1)
    t_means = y.mean(axis=0)
    cell = y.groupby(grp).mean()
    s_means = y.mean(axis=1)
    ss_g = b * n * ((g_means - grand) ** 2).sum()
    ss_subj = b * ((s_means - grp.map(g_means)) ** 2).sum()
    ss_t = a * n * ((t_means - grand) ** 2).sum()
    ss_gt = n * ((cell.sub(g_means, axis=0).sub(t_means, axis=1) + grand) ** 2).values.sum()
    ss_tot = ((y.values - grand) ** 2).sum()
    ss_err = ss_tot - ss_g - ss_subj - ss_t - ss_gt
    df_g, df_subj, df_t = a - 1, a * (n - 1), b - 1
    df_gt, df_err = (a - 1) * (b - 1), a * (n - 1) * (b - 1)
    out = {}
    for name, ss, d1, sse, d2 in (("group", ss_g, df_g, ss_subj, df_subj), ("time", ss_t, df_t, ss_err, df_err),
                                  ("group_x_time", ss_gt, df_gt, ss_err, df_err)):
        f = (ss / d1) / (sse / d2)
        out[name] = {"f": f, "df1": d1, "df2": d2, "p": sps.f.sf(f, d1, d2), "np2": ss / (ss + sse)}
    return out


# --------------------------------------------------------------------------------------------
# FDR

BH_EXAMPLE = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
              0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000]


def test_fdr_bh_matches_hand_formula_and_paper_example():
    p = np.array(BH_EXAMPLE)
    p_fdr, reject = S.fdr_bh(p, alpha=0.05)
    # Benjamini & Hochberg (1995), section 4: the step-up procedure rejects the 4 smallest
    assert reject.sum() == 4 and reject[:4].all()
    m = len(p)
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    hand = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1)
    expected = np.empty(m)
    expected[order] = hand
    np.testing.assert_allclose(p_fdr, expected, rtol=1e-12)


def test_fdr_ignores_nan_and_corrects_per_family():
    p_fdr, reject = S.fdr_bh([0.01, np.nan, 0.04])
    assert np.isnan(p_fdr[1]) and not reject[1]
    np.testing.assert_allclose(p_fdr[[0, 2]], [0.02, 0.04])
    df = pd.DataFrame({"fam": ["a", "a", "b", "b"], "p": [0.01, 0.04, 0.03, 0.5]})
    out = S.add_fdr(df, ["fam"])
    np.testing.assert_allclose(out["p_fdr"], [0.02, 0.04, 0.06, 0.5])


# --------------------------------------------------------------------------------------------
# ANOVA


def test_mixed_anova_matches_textbook_sums_of_squares():
    df = _balanced(n_per_group=6, seed=3)
    res, notes = S.mixed_anova(df)
    assert notes == []
    hand = _hand_mixed_anova(df)
    for src, h in hand.items():
        r = res[res["source"] == src].iloc[0]
        assert r["test"] == "mixed_anova"
        assert r["df1"] == h["df1"] and r["df2"] == h["df2"]
        assert r["f"] == pytest.approx(h["f"], rel=1e-8)
        assert r["p"] == pytest.approx(h["p"], rel=1e-6)
        assert r["partial_eta_sq"] == pytest.approx(h["np2"], rel=1e-8)


def test_mixed_anova_two_by_two_equals_t_tests_on_change_and_mean():
    """In a 2 x 2 mixed design the interaction F is the squared Student t of the change scores
    between groups and the group F the squared t of the subject means (unbalanced groups)."""
    df = _balanced(n_per_group=7, seed=5)
    df = df[~df["participant_id"].isin(["sub-HC0", "sub-HC1"])]  # unbalanced 5 vs 7
    res, _ = S.mixed_anova(df)
    wide = df.pivot(index="participant_id", columns="session_id", values="chi_ppb")
    grp = df.drop_duplicates("participant_id").set_index("participant_id")["group"].reindex(wide.index)
    change = wide["ses-followup"] - wide["ses-baseline"]
    mean = wide.mean(axis=1)
    t_int = sps.ttest_ind(change[grp == "MS"], change[grp == "HC"]).statistic
    t_grp = sps.ttest_ind(mean[grp == "MS"], mean[grp == "HC"]).statistic
    f = res.set_index("source")["f"]
    assert f["group_x_time"] == pytest.approx(t_int**2, rel=1e-8)
    assert f["group"] == pytest.approx(t_grp**2, rel=1e-8)


def test_anova_single_group_and_single_session_fallbacks():
    df = _balanced(n_per_group=6, seed=1)
    hc = df[df["group"] == "HC"]
    res, notes = S.mixed_anova(hc)
    assert list(res["source"]) == ["time"] and res["test"].iloc[0] == "rm_anova"
    wide = hc.pivot(index="participant_id", columns="session_id", values="chi_ppb")
    t = sps.ttest_rel(wide["ses-followup"], wide["ses-baseline"]).statistic
    assert res["f"].iloc[0] == pytest.approx(t**2, rel=1e-8)
    assert any("only one group" in n for n in notes)

    base = df[df["session_id"] == "ses-baseline"].copy()
    base.attrs = {"session_order": ["ses-baseline"], "structures": ["caudate"]}
    res, notes = S.mixed_anova(base)
    assert list(res["source"]) == ["group"] and res["test"].iloc[0] == "oneway_anova"
    t = sps.ttest_ind(base.loc[base.group == "MS", "chi_ppb"], base.loc[base.group == "HC", "chi_ppb"]).statistic
    assert res["f"].iloc[0] == pytest.approx(t**2, rel=1e-8)
    assert any("single session" in n for n in notes)


def test_anova_excludes_incomplete_and_counts_them():
    df = _balanced(n_per_group=6, seed=2)
    df = df[~((df["participant_id"] == "sub-MS0") & (df["session_id"] == "ses-followup"))]
    res, notes = S.mixed_anova(df)
    assert (res["n_excluded"] == 1).all() and (res["n_subjects"] == 11).all()
    assert any("excluded from the ANOVA" in n for n in notes)


# --------------------------------------------------------------------------------------------
# t-tests and effect sizes


def test_paired_and_welch_match_scipy_and_hand_effect_sizes():
    x1 = np.array([1.0, 2.0, 3.0])
    x2 = np.array([4.0, 5.0, 6.0])
    d, lo, hi = S.cohen_d_pooled(x1, x2)
    assert d == pytest.approx(3.0)  # (5 - 2) / pooled SD 1
    assert lo < d < hi
    res = S.welch_test(x1, x2)
    ref = sps.ttest_ind(x2, x1, equal_var=False)
    assert res["t"] == pytest.approx(ref.statistic) and res["p"] == pytest.approx(ref.pvalue)
    assert res["df"] == pytest.approx(ref.df) and res["difference_ppb"] == pytest.approx(3.0)

    first = np.array([10.0, 12.0, 9.0, 11.0])
    later = np.array([12.0, 13.0, 12.0, 12.0])  # differences 2, 1, 3, 1: mean 1.75, sd 0.9574
    res = S.paired_test(first, later)
    ref = sps.ttest_rel(later, first)
    assert res["t"] == pytest.approx(ref.statistic) and res["p"] == pytest.approx(ref.pvalue)
    assert res["effect_size"] == pytest.approx(1.75 / np.std([2, 1, 3, 1], ddof=1))
    ci = ref.confidence_interval()
    assert res["difference_ci_low_ppb"] == pytest.approx(ci.low)


def test_noncentral_ci_definition_and_large_sample_limit():
    t, df = 2.5, 20
    lo, hi = S.noncentral_t_ci(t, df)
    assert sps.nct.cdf(t, df, lo) == pytest.approx(0.975, abs=1e-8)
    assert sps.nct.cdf(t, df, hi) == pytest.approx(0.025, abs=1e-8)
    # large n: close to the Hedges-Olkin normal approximation
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(0, 1, 400), rng.normal(0.5, 1, 400)
    d, lo, hi = S.cohen_d_pooled(x1, x2)
    se = np.sqrt(2 / 400 + d**2 / (4 * 400))
    assert lo == pytest.approx(d - 1.96 * se, abs=0.01) and hi == pytest.approx(d + 1.96 * se, abs=0.01)


def test_effect_size_ci_coverage():
    """95% CIs of d_z and pooled d cover the true effect in ~95% of seeded replicates."""
    rng = np.random.default_rng(42)
    reps, cover_z, cover_d = 600, 0, 0
    for _ in range(reps):
        diff = rng.normal(0.6, 1.0, 10)  # true d_z 0.6
        _, lo, hi = S.cohen_dz(diff)
        cover_z += lo <= 0.6 <= hi
        _, lo, hi = S.cohen_d_pooled(rng.normal(0, 1, 8), rng.normal(1.0, 1, 12))  # true d 1.0
        cover_d += lo <= 1.0 <= hi
    assert 0.92 <= cover_z / reps <= 0.98
    assert 0.92 <= cover_d / reps <= 0.98


def test_follow_up_ttests_families_and_skips():
    df = _balanced(n_per_group=6, seed=4)
    res, notes = S.follow_up_ttests(df)
    assert set(res["test"]) == {"paired", "welch"}
    assert len(res) == 4  # 2 paired (HC, MS) + 2 Welch (baseline, followup)
    w = res[(res["test"] == "welch") & (res["session_id"] == "ses-baseline")].iloc[0]
    base = df[df["session_id"] == "ses-baseline"]
    ref = sps.ttest_ind(base.loc[base.group == "MS", "chi_ppb"], base.loc[base.group == "HC", "chi_ppb"], equal_var=False)
    assert w["p"] == pytest.approx(ref.pvalue) and w["contrast"] == "MS - HC"
    # one structure per family: FDR p equals raw p
    np.testing.assert_allclose(res["p_fdr"], res["p"])
    res1, notes1 = S.follow_up_ttests(df[df["group"] == "HC"])
    assert set(res1["test"]) == {"paired"} and any("single group" in n for n in notes1)


# --------------------------------------------------------------------------------------------
# LMM


def test_lmm_recovers_planted_fixed_effects_with_missing_followups():
    rng = np.random.default_rng(7)
    truth = {"Intercept": 50.0, "group[MS]": 10.0, "time[ses-followup]": 5.0,
             "group[MS]:time[ses-followup]": 3.0, "age": 0.5}
    rows = []
    for i in range(120):
        grp = "MS" if i % 2 else "HC"
        age = rng.normal(45, 10)
        u = rng.normal(0, 8)
        for t, ses in enumerate(("ses-baseline", "ses-followup")):
            if t == 1 and i < 20:
                continue  # 20 participants miss the follow-up
            y = (truth["Intercept"] + truth["group[MS]"] * (grp == "MS") + truth["time[ses-followup]"] * t
                 + truth["group[MS]:time[ses-followup]"] * t * (grp == "MS") + truth["age"] * (age - 45) + u
                 + rng.normal(0, 2))
            rows.append((f"sub-{i:03d}", ses, grp, age, "caudate", y))
    df = pd.DataFrame(rows, columns=["participant_id", "session_id", "group", "age", "structure", "chi_ppb"])
    df.attrs = {"session_order": ["ses-baseline", "ses-followup"], "structures": ["caudate"]}
    res, notes = S.fit_lmm(df, covariates=["age"])
    fe = res[res["term_type"] == "fixed_effect"].set_index("term")
    assert fe["n_observations"].iloc[0] == 220 and fe["n_subjects"].iloc[0] == 120
    assert fe["n_subjects_incomplete"].iloc[0] == 20
    for term in ("group[MS]", "time[ses-followup]", "group[MS]:time[ses-followup]", "age"):
        est, se = fe.loc[term, "estimate"], fe.loc[term, "se"]
        assert abs(est - truth[term]) < 3 * se, (term, est, se)
        assert fe.loc[term, "ci_low"] < truth[term] < fe.loc[term, "ci_high"]
    assert fe.loc["time[ses-followup]", "p"] < 1e-6
    assert res["subject_sd_ppb"].iloc[0] == pytest.approx(8, rel=0.25)
    assert res["residual_sd_ppb"].iloc[0] == pytest.approx(2, rel=0.25)
    assert bool(res["converged"].all())


def test_lmm_balanced_equals_cell_means_and_marginals():
    """With balanced complete data and no covariate, GLS = OLS: fixed effects are cell-mean
    differences and the marginal contrasts are the equal-weight averaged differences."""
    df = _balanced(n_per_group=8, seed=9)
    res, _ = S.fit_lmm(df)
    est = res.set_index("term")["estimate"]
    cell = df.groupby(["group", "session_id"])["chi_ppb"].mean()
    assert est["group[MS]"] == pytest.approx(cell["MS", "ses-baseline"] - cell["HC", "ses-baseline"], abs=1e-4)
    assert est["time[ses-followup]"] == pytest.approx(cell["HC", "ses-followup"] - cell["HC", "ses-baseline"], abs=1e-4)
    g_marg = (cell["MS"] - cell["HC"]).mean()
    t_marg = (cell[:, "ses-followup"] - cell[:, "ses-baseline"]).mean()
    assert est["group[MS] (marginal)"] == pytest.approx(g_marg, abs=1e-4)
    assert est["time[ses-followup] (marginal)"] == pytest.approx(t_marg, abs=1e-4)


def test_lmm_skips_single_session():
    df = _balanced(n_per_group=5, seed=1)
    base = df[df["session_id"] == "ses-baseline"].copy()
    base.attrs = {"session_order": ["ses-baseline"], "structures": ["caudate"]}
    res, notes = S.fit_lmm(base)
    assert res.empty and any("one session only" in n for n in notes)


# --------------------------------------------------------------------------------------------
# cohort assembly


def _roi(values, drop=()):
    rows = []
    for i, (s, h) in enumerate([(s, h) for s in ("caudate", "putamen") for h in ("left", "right")], start=1):
        if (s, h) in drop:
            continue
        rows.append({"index": i, "name": f"{h}_{s}", "structure": s, "hemisphere": h,
                     "mean_ppb": values.get((s, h), np.nan), "median_ppb": 0.0, "sd_ppb": 1.0,
                     "n_voxels": 10 if np.isfinite(values.get((s, h), np.nan)) else 0, "volume_mm3": 80.0})
    return pd.DataFrame(rows)


def test_cohort_bilateral_mean_missing_hemisphere_and_missing_session():
    v = {("caudate", "left"): 40.0, ("caudate", "right"): 60.0, ("putamen", "left"): 30.0, ("putamen", "right"): 34.0}
    parts = pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "group": ["HC", "MS"], "age": [30, 40]})
    tables = [
        ("sub-01", "ses-baseline", _roi(v)),
        ("sub-01", "ses-followup", _roi({**v, ("putamen", "right"): np.nan})),
        ("sub-02", "ses-baseline", _roi(v, drop=[("caudate", "left"), ("caudate", "right")])),
    ]
    long = S.build_long_table(tables, parts)
    assert list(long.columns[:4]) == ["participant_id", "session_id", "group", "age"]
    assert list(long.columns[4:]) == ["index", "name", "structure", "hemisphere", "mean_ppb", "median_ppb",
                                      "sd_ppb", "n_voxels", "volume_mm3"]
    table, warns = S.analysis_table(long, structures=["caudate", "putamen", "pallidum"])
    val = table.set_index(["participant_id", "session_id", "structure"])["chi_ppb"]
    assert val["sub-01", "ses-baseline", "caudate"] == 50.0  # equal-weight mean of 40 and 60
    assert np.isnan(val["sub-01", "ses-followup", "putamen"])
    assert np.isnan(val["sub-02", "ses-followup", "caudate"])
    text = "\n".join(warns)
    assert "sub-02: no ROI table for session(s) ses-followup" in text
    assert "'pallidum' is not in any ROI table" in text
    assert "sub-01 ses-followup: putamen right has no value" in text
    assert "sub-02 ses-baseline: structure(s) caudate missing" in text
    assert "bilateral value set to n/a" in text

    table_h, _ = S.analysis_table(long, structures=["caudate"], hemispheres=True)
    assert set(table_h["structure"]) == {"caudate_left", "caudate_right"}
    assert table_h.set_index(["participant_id", "session_id", "structure"])["chi_ppb"][
        "sub-01", "ses-baseline", "caudate_right"] == 60.0


def test_session_order_and_group_order():
    assert S.order_sessions(["ses-followup", "ses-baseline"]) == ["ses-baseline", "ses-followup"]
    assert S.order_sessions(["ses-10", "ses-2", "ses-1"]) == ["ses-1", "ses-2", "ses-10"]
    assert S.order_sessions(["ses-post", "ses-pre"]) == ["ses-pre", "ses-post"]
    assert S.order_sessions(["ses-a", "ses-b"], sessions=["b", "a"]) == ["ses-b", "ses-a"]
    assert S.group_order(["MS", "HC", "MS"]) == ["HC", "MS"]
    assert S.group_order(["patient", "control"]) == ["control", "patient"]
    assert S.group_order(["A", "B"], reference="B") == ["B", "A"]


def test_descriptives_match_pandas():
    df = _balanced(n_per_group=6, seed=11)
    d = S.descriptives(df)
    ref = df.groupby(["group", "session_id"])["chi_ppb"].agg(["mean", "std", "count"])
    for r in d.itertuples():
        assert r.mean_ppb == pytest.approx(ref.loc[(r.group, r.session_id), "mean"])
        assert r.sd_ppb == pytest.approx(ref.loc[(r.group, r.session_id), "std"])
        assert r.n == ref.loc[(r.group, r.session_id), "count"]
    assert list(d["group"].unique()) == ["HC", "MS"]


# --------------------------------------------------------------------------------------------
# small-sample rules, degrees of freedom and fit checks


def test_between_within_df_equal_anova_df_and_lmm_t_equals_anova_f():
    """Balanced complete data: the between-within df are the mixed ANOVA's denominator df and the
    LMM's interaction t test is the ANOVA's interaction F test (t^2 = F, same p)."""
    df = _balanced(n_per_group=6, seed=11)
    res, notes = S.fit_lmm(df)
    hand = _hand_mixed_anova(df)
    fe = res.set_index("term")
    assert bool(fe["fit_ok"].all()), notes
    inter = fe.loc["group[MS]:time[ses-followup]"]
    assert inter["df"] == hand["group_x_time"]["df2"] == 10
    assert inter["t"] ** 2 == pytest.approx(hand["group_x_time"]["f"], rel=1e-4)
    assert inter["p"] == pytest.approx(hand["group_x_time"]["p"], rel=1e-3)
    # the marginal group contrast is a between-subject comparison: ANOVA group effect
    g = fe.loc["group[MS] (marginal)"]
    assert g["df"] == hand["group"]["df2"] == 10
    assert g["t"] ** 2 == pytest.approx(hand["group"]["f"], rel=1e-4)
    # CI from the t distribution with those df
    q = sps.t.ppf(0.975, 10)
    assert inter["ci_high"] - inter["estimate"] == pytest.approx(q * inter["se"], rel=1e-9)


def test_between_within_df_with_incomplete_subjects_and_covariate():
    rows = []
    for i in range(8):
        for t in range(2 if i >= 2 else 1):  # two participants without follow-up
            rows.append((f"s{i}", t, i % 2, 40.0 + i))
    d = pd.DataFrame(rows, columns=["sub", "t", "g", "age"])
    X = np.column_stack([np.ones(len(d)), d["g"], d["t"], d["g"] * d["t"], d["age"]])
    df, between = S.between_within_df(X, d["sub"])
    assert between.tolist() == [True, True, False, False, True]
    # between: 8 subjects - rank 3 (intercept, group, age); within: 14 obs - 8 subjects - 2 columns
    assert df.tolist() == [5.0, 5.0, 4.0, 4.0, 5.0]


def test_singular_fit_is_flagged_and_never_highlighted():
    """Subject means identical within each group make the REML subject variance 0 (boundary):
    the fit is reported (fit_ok false, reason given) and not significant even with p tiny."""
    rng = np.random.default_rng(3)
    rows = []
    for gi, grp in enumerate(("HC", "MS")):
        for k in range(6):
            d = rng.normal(0, 1)
            for t, ses in enumerate(("ses-baseline", "ses-followup")):
                y = 50 + 20 * gi + (d if t else -d)  # every subject's mean is 50 + 20 gi
                rows.append((f"sub-{grp}{k}", ses, grp, "caudate", y))
    df = pd.DataFrame(rows, columns=["participant_id", "session_id", "group", "structure", "chi_ppb"])
    df.attrs = {"session_order": ["ses-baseline", "ses-followup"], "structures": ["caudate"]}
    res, notes = S.fit_lmm(df)
    assert not res["fit_ok"].any()
    assert "singular fit" in res["fit_warning"].iloc[0]
    g = res.set_index("term").loc["group[MS] (marginal)"]
    assert g["p"] < 1e-6 and not res["significant_fdr"].any()
    assert any("LMM fit problem: singular fit" in n for n in notes)


def test_minimum_n_rules_skip_tests_below_them():
    df = _balanced(n_per_group=2, seed=5)
    tt, notes_t = S.follow_up_ttests(df)
    assert tt.empty and any("minimum 3" in n for n in notes_t)
    an, notes_a = S.mixed_anova(df)
    assert an.empty and any("minimum-n rule" in n for n in notes_a)
    lm, notes_l = S.fit_lmm(df)
    assert lm.empty and any("LMM" in n and "fewer than 3" in n for n in notes_l)
    # exactly at the minimum every test runs
    df3 = _balanced(n_per_group=3, seed=5)
    assert len(S.follow_up_ttests(df3)[0]) == 4 and len(S.mixed_anova(df3)[0]) == 3
    assert not S.fit_lmm(df3)[0].empty


def test_lmm_terms_without_enough_df_are_not_tested():
    """3 + 3 participants and three numeric covariates: 6 - rank(1, group, 3 covariates) = 1
    between-subject df < MIN_DF, so between-subject terms get no p/CI; time terms keep theirs."""
    df = _balanced(n_per_group=3, seed=8)
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        vals = dict(zip(df["participant_id"].unique(), rng.normal(0, 1, 6)))
        df[c] = df["participant_id"].map(vals)
    res, notes = S.fit_lmm(df, covariates=["a", "b", "c"])
    fe = res.set_index("term")
    assert fe.loc["group[MS]", "df"] == 1 and np.isnan(fe.loc["group[MS]", "p"])
    assert np.isnan(fe.loc["a", "ci_low"])
    assert fe.loc["time[ses-followup]", "df"] == 4 and np.isfinite(fe.loc["time[ses-followup]", "p"])
    assert any("denominator degrees of freedom" in n for n in notes)


def test_lmm_any_label_text_works():
    df = _balanced(n_per_group=5, seed=2)
    df["group"] = df["group"].map({"HC": "HC(a)", "MS": "MS 'b' \"c\" ~ x"})
    df["site"] = df["participant_id"].map(lambda p: "site(1)" if p[-1] in "02468" else "site:2")
    res, notes = S.fit_lmm(df, covariates=["site"])
    terms = set(res["term"])
    assert "group[MS 'b' \"c\" ~ x]" in terms and "group[MS 'b' \"c\" ~ x]:time[ses-followup]" in terms
    assert "site[site:2]" in terms
    plain = _balanced(n_per_group=5, seed=2)
    plain["site"] = plain["participant_id"].map(lambda p: "s1" if p[-1] in "02468" else "s2")
    ref, _ = S.fit_lmm(plain, covariates=["site"])
    # same data and coding, plain labels: identical numbers (the labels only name the terms)
    np.testing.assert_allclose(res["estimate"].to_numpy(), ref["estimate"].to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(res["p"].to_numpy(), ref["p"].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("seed, sd_u, drop", [(0, 8.0, 5), (1, 2.0, 0), (2, 15.0, 9)])
def test_reml_random_intercept_matches_statsmodels_mixedlm(seed, sd_u, drop):
    """The closed-form profiled REML gives statsmodels MixedLM's REML estimates (fixed effects,
    their SEs, both variances) on unbalanced data with a covariate."""
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(30):
        g, age, u = i % 2, rng.normal(40, 10), rng.normal(0, sd_u)
        for t in range(3 if i >= drop else 1):
            rows.append((f"s{i}", g, t, age, 50 + 5 * g + 2 * t + 0.3 * (age - 40) + u + rng.normal(0, 3)))
    d = pd.DataFrame(rows, columns=["sub", "g", "t", "age", "y"])
    formula = "y ~ C(g) * C(t) + age"
    ref = smf.mixedlm(formula, d, groups=d["sub"]).fit(reml=True)
    import patsy

    y, X = patsy.dmatrices(formula, d, return_type="dataframe")
    fit = S.reml_random_intercept(y.to_numpy().ravel(), X.to_numpy(), d["sub"])
    np.testing.assert_allclose(fit["beta"], ref.fe_params.to_numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.sqrt(np.diag(fit["cov_beta"])), ref.bse_fe.to_numpy(), rtol=1e-3)
    assert fit["var_e"] == pytest.approx(ref.scale, rel=1e-3)
    assert fit["var_u"] == pytest.approx(float(ref.cov_re.iloc[0, 0]), rel=1e-3, abs=1e-3)


def test_exact_fit_is_flagged_not_significant():
    """Values exactly determined by the design (e.g. copied tables): residual variance 0, every
    p-value would be ~0; the fit is flagged and nothing is highlighted."""
    rows = []
    for gi, grp in enumerate(("HC", "MS")):
        for k in range(4):
            for t, ses in enumerate(("ses-a", "ses-b")):
                rows.append((f"sub-{grp}{k}", ses, t, grp, "caudate", "bilateral", 50.0 + 3 * t + 5 * gi, 1))
    df = pd.DataFrame(rows, columns=["participant_id", "session_id", "time_index", "group", "structure",
                                     "hemisphere", "chi_ppb", "n_voxels"])
    df.attrs = {"session_order": ["ses-a", "ses-b"], "structures": ["caudate"]}
    res, notes = S.fit_lmm(df)
    assert not res["fit_ok"].any() and not res["significant_fdr"].any()
    assert any("residual variance 0" in n for n in notes)
