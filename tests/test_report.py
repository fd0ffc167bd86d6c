"""xfr.report: methods.csv rows, nested metrics flattened."""

import pytest

from xfr import report as R


def test_flatten_metrics_joins_nested_keys():
    nested = {"rise": {"box_ap": 0.5, "stability": {"pearson": 1.0}}, "lime_map": {"box_ap": 0.25},
              "n_faces": 3, "ranking": ["a", "b"], "empty": {}}
    assert R.flatten_metrics(nested) == {"rise_box_ap": 0.5, "rise_stability_pearson": 1.0,
                                         "lime_map_box_ap": 0.25, "n_faces": 3, "ranking": ["a", "b"]}
    # an empty dict has no leaves; one name from two paths is an error
    with pytest.raises(ValueError, match="twice"):
        R.flatten_metrics({"a_b": 1, "a": {"b": 2}})
    assert R.flatten_metrics({"a": {"b": 1}}, sep="/") == {"a/b": 1}
