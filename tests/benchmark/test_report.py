"""Statistics, tables and plots of the report, from hand-made cells (no training)."""

import math

import pytest

from vectorpose.benchmark.report import collapse_warnings, convergence_warnings, headline_table, plot, statistics

T975_DF2 = 4.302653  # Student t, two-sided 95 %, 2 degrees of freedom

DICE = {  # method -> fraction -> seed -> mean Dice
    "scratch": {0.1: {0: 0.60, 1: 0.70, 2: 0.65}, 1.0: {0: 0.85, 1: 0.86, 2: 0.87}},
    "genesis": {0.1: {0: 0.62, 1: 0.69, 2: 0.70}, 1.0: {0: 0.85, 1: 0.85, 2: 0.88}},
    "vectorpose": {0.1: {0: 0.70, 1: 0.75, 2: 0.71}, 1.0: {0: 0.86, 1: 0.86, 2: 0.86}},
}
LABELLED = {0.1: 14, 1.0: 145}


def cells() -> list[dict]:
    rows = []
    for method, by_fraction in DICE.items():
        for fraction, by_seed in by_fraction.items():
            for seed, dice in by_seed.items():
                per_class = {"a": {"dice": dice - 0.01, "hd95": 2.0}, "b": {"dice": dice + 0.01, "hd95": 3.0}}
                rows.append({"method": method, "fraction": fraction, "seed": seed, "labelled": LABELLED[fraction],
                             "test": {"num_cases": 5, "mean_dice": dice, "mean_hd95": 2.5, "per_class": per_class}})
    return rows


def test_paired_differences_by_hand():
    stats = statistics(cells(), "test")
    # vectorpose - scratch at 10 %: +0.10, +0.05, +0.06 -> mean 0.07, std sqrt(((0.03)^2 + (0.02)^2 + (0.01)^2) / 2) = sqrt(0.0007)
    d = stats["vs_scratch"]["vectorpose@0.1"]
    assert d["mean"] == pytest.approx(0.07)
    assert d["std"] == pytest.approx(math.sqrt(0.0007))
    half = T975_DF2 * math.sqrt(0.0007) / math.sqrt(3)
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(0.07 - half), pytest.approx(0.07 + half))
    assert d["positive"] == 3
    # vectorpose - genesis at 10 %: +0.08, +0.06, +0.01 -> mean 0.05
    v = stats["vectorpose_vs"]["genesis@0.1"]
    assert v["mean"] == pytest.approx(0.05) and v["positive"] == 3
    # at 100 %: genesis - scratch = 0, -0.01, +0.01 -> mean 0, one positive
    g = stats["vs_scratch"]["genesis@1"]
    assert g["mean"] == pytest.approx(0.0, abs=1e-12) and g["positive"] == 1
    assert "scratch@0.1" not in stats["vs_scratch"] and "vectorpose@0.1" not in stats["vectorpose_vs"]
    s = stats["summary"]["scratch@0.1"]
    assert (s["mean"], s["std"], s["n"]) == (pytest.approx(0.65), pytest.approx(0.05), 3)


def test_headline_table_lists_every_method_and_fraction():
    rows = cells()
    table = headline_table(rows, statistics(rows, "test")).splitlines()
    assert table[0] == "| method | 14 labelled (10%) | 145 labelled (100%) |"
    assert table[2] == "| scratch | 0.650 ± 0.050 | 0.860 ± 0.010 |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| scratch", "| genesis", "| vectorpose"]


def test_plots_are_png(tmp_path):
    rows = cells()
    written = plot(rows, statistics(rows, "test"), tmp_path)
    assert [p.name for p in written] == ["dice_vs_labels.png", "gain_over_scratch.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_convergence_warnings_name_the_cells_that_still_improved():
    rows = cells()
    for r in rows:
        r["converged"], r["late_gain"] = True, 0.0
    late = [r for r in rows if r["method"] == "scratch" and r["fraction"] == 0.1]
    late[0]["converged"], late[0]["late_gain"] = False, 0.04
    warnings = convergence_warnings(rows)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"scratch with {late[0]['labelled']} labelled (10%): 1 of {len(late)} cells had not converged")
    del rows[-1]["converged"]  # a cell from before the verdict existed warns of nothing
    assert len(convergence_warnings(rows)) == 1


def test_collapse_warnings_name_the_class_and_the_seeds_that_learned_it():
    rows = cells()
    assert collapse_warnings(rows) == []
    lost = [r for r in rows if r["method"] == "vectorpose" and r["fraction"] == 0.1]
    lost[1]["test"]["per_class"]["b"]["dice"] = 0.0
    lost[2]["test"]["per_class"]["b"]["dice"] = 0.005
    assert collapse_warnings(rows) == [f"vectorpose with {lost[0]['labelled']} labelled (10%): b not learned (Dice below 0.01) with seeds 1, 2; "
                                       "learned with seed 0 (0.71)"]
    lost[0]["test"]["per_class"]["b"]["dice"] = 0.0
    assert collapse_warnings(rows)[0].endswith("with seeds 0, 1, 2; no seed learned it")
    # a seed whose test cases do not score the class (absent from all of them) is neither lost nor learned
    lost[0]["test"]["per_class"]["b"]["dice"] = None
    assert collapse_warnings(rows)[0].endswith("with seeds 1, 2; no seed learned it")


def test_collapse_warnings_say_where_the_lost_voxels_went():
    rows = cells()
    lost = [r for r in rows if r["method"] == "vectorpose" and r["fraction"] == 0.1]
    lost[1]["test"]["per_class"]["b"]["dice"] = 0.0
    # 200 voxels of b: 124 labelled a, 70 background, 6 b -> a 62 %, background 35 % (b's 3 % is below 5 %)
    lost[1]["test"]["confusion"] = {"classes": ["background", "a", "b"], "counts": [[900, 5, 1], [3, 80, 0], [70, 124, 6]]}
    assert collapse_warnings(rows) == [f"vectorpose with {lost[0]['labelled']} labelled (10%): b not learned (Dice below 0.01) with seed 1; "
                                       "seed 1's b voxels were labelled a 62 %, background 35 %; learned with seed 0 (0.71), 2 (0.72)"]
    # a cell evaluated before confusion counts existed says nothing of them
    del lost[1]["test"]["confusion"]
    assert collapse_warnings(rows)[0].endswith("with seed 1; learned with seed 0 (0.71), 2 (0.72)")


def test_classes_still_rising_are_named_in_both_warnings():
    rows = cells()
    for r in rows:
        r["converged"], r["late_gain"], r["rising"] = True, 0.0, []
    setting = [r for r in rows if r["method"] == "scratch" and r["fraction"] == 0.1]
    setting[0]["rising"], setting[2]["rising"] = ["b"], ["a", "b"]
    assert convergence_warnings(rows) == [f"scratch with {setting[0]['labelled']} labelled (10%): validation Dice of a class still rose by more "
                                          "than 0.01 in the last quarter: b (seeds 0, 2); a (seed 2); more steps may still raise these classes"]
    setting[1]["test"]["per_class"]["b"]["dice"] = 0.0
    assert collapse_warnings(rows) == [f"scratch with {setting[0]['labelled']} labelled (10%): b not learned (Dice below 0.01) with seed 1; "
                                       "learned with seed 0 (0.61), 2 (0.66); still rising at the end with seeds 0, 2"]
