import pytest

from bench.analysis.claims import SHIPPED, ClaimSet, judge_all, load_claims, restore_hours_per_year
from bench.common.errors import UserError
from bench.common.tomlfile import load_model

CLAIM = """
title = "vendor"
[[claims]]
name = "reading"
statement = "20 images/s for 10 workstations"
metric = "retrieve_instances_per_s"
at_least = 20
user_type = "workstation"
min_users = 10
"""


def _verdicts(text, tmp_path, metrics, users):
    path = tmp_path / "claims.toml"
    path.write_text(text)
    return judge_all(load_claims([path]), metrics, users)[0]["verdicts"]


def test_shipped_claims_are_valid_and_cover_the_seed_paper():
    (kagadis,) = [s for s in load_claims() if "Kagadis" in s.title]
    assert {c.metric for c in kagadis.claims} == {
        "ingest_instances_per_s",
        "retrieve_instances_per_s",
        "study_seconds_per_30mb",
        "restore_hours_per_year",
    }
    assert all(p.suffix == ".toml" for p in SHIPPED.iterdir())


@pytest.mark.parametrize(
    "measured, users, verdict",
    [(25.0, 10, "pass"), (15.0, 12, "fail"), (None, 10, "not measured"), (25.0, 4, "not comparable")],
)
def test_verdicts(tmp_path, measured, users, verdict):
    metrics = {} if measured is None else {"retrieve_instances_per_s": measured}
    (result,) = _verdicts(CLAIM, tmp_path, metrics, {"workstation": users})
    assert result["verdict"] == verdict and result["bound"] == ">= 20 instances/s"


def test_the_recovery_claim_says_where_its_figure_comes_from_and_judges_it():
    (kagadis,) = [s for s in load_claims() if "Kagadis" in s.title]
    (unmeasured,) = [v for v in judge_all([kagadis], {}, {})[0]["verdicts"] if v["name"] == "recovery"]
    assert unmeasured["verdict"] == "not measured" and "bench.benchmarks.backup_restore" in unmeasured["note"]
    # 219 GB at 20 MB/s is about 3 h (pass); at 10 MB/s about 6 h (fail).
    verdicts = [
        judge_all([kagadis], {"restore_hours_per_year": restore_hours_per_year(speed)}, {})[0]["verdicts"]
        for speed in (20.0, 10.0)
    ]
    assert [next(v["verdict"] for v in vs if v["name"] == "recovery") for vs in verdicts] == ["pass", "fail"]


@pytest.mark.parametrize(
    "change, message",
    [
        (('metric = "retrieve_instances_per_s"', 'metric = "speed"'), "unknown metric 'speed'"),
        (("at_least = 20", "at_leest = 20"), "did you mean 'at_least'"),
        (("at_least = 20", ""), "needs at_least or at_most"),
    ],
)
def test_bad_claim_files_are_one_line_errors(tmp_path, change, message):
    path = tmp_path / "bad.toml"
    path.write_text(CLAIM.replace(*change))
    with pytest.raises(UserError, match=message) as error:
        load_model(path, ClaimSet, "claims")
    assert "\n" not in str(error.value) and str(path) in str(error.value)
