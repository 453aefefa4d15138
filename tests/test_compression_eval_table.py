"""The greedy search's eval table as a JSON file (refq.compression.eval_table): a round trip
keeps every float and the layer order; every malformed file gets one clear error naming it."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from refq.compression.eval_table import load_eval_table, save_eval_table
from refq.errors import FormatError

from test_compression_greedy import random_table


# ------------------------------------------------------------------------- the JSON file ------

def test_table_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    table = random_table(rng, 3, candidates=7)
    path = tmp_path / "sub" / "scores.json"
    save_eval_table(path, table, method="weight-svd", cost="params", evaluation="accuracy")
    loaded, info = load_eval_table(path)
    assert loaded == table and list(loaded) == list(table)
    assert info == {"method": "weight-svd", "cost": "params", "evaluation": "accuracy"}
    assert [p for p in os.listdir(tmp_path / "sub")] == ["scores.json"]   # no temporary left
    text = path.read_text()
    assert "0.14285714285714285" in text and "pickle" not in text


def _doc(**changes):
    doc = {"format": "refq-compression-eval-table", "version": 1, "method": "spatial-svd",
           "cost": "macs", "evaluation": "", "scores": {"conv": {"0.5": 0.9, "0.25": 0.5}}}
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    ("[1, 2]", "must be a JSON object"),
    (_doc(version=2), "version 2"),
    (_doc(format="aimet-pickle"), "is not 'refq-compression-eval-table'"),
    (_doc(cost="latency"), "cost 'latency'"),
    (_doc(extra=1), "unknown \\['extra'\\]"),
    (_doc(scores={}), "non-empty object"),
    (_doc(scores={"conv": {}}), "layer 'conv': expected a non-empty"),
    (_doc(scores={"conv": [0.5]}), "layer 'conv': expected a non-empty"),
    (_doc(scores={"conv": {"1.5": 0.9}}), "ratio '1.5' is not a number in \\(0, 1\\]"),
    (_doc(scores={"conv": {"0": 0.9}}), "ratio '0' is not"),
    (_doc(scores={"conv": {"half": 0.9}}), "ratio 'half' is not"),
    (_doc(scores={"conv": {"nan": 0.9}}), "ratio 'nan' is not"),
    (_doc(scores={"conv": {"0.5": "high"}}), "score 'high' is not a finite number"),
    (_doc(scores={"conv": {"0.5": True}}), "score 'True' is not a finite number"),
    (_doc(scores={"conv": {"0.5": 0.1, "0.50": 0.2}}), "appears twice"),
    (_doc().replace('"0.25": 0.5', '"0.25": NaN'), "NaN"),
    (_doc().replace('"0.25": 0.5', '"0.5": 0.7'), "key '0.5' appears twice"),
])
def test_malformed_tables_get_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(FormatError, match=message) as e:
        load_eval_table(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_table_and_unsavable_scores(tmp_path):
    with pytest.raises(FormatError, match="cannot read"):
        load_eval_table(tmp_path / "none.json")
    with pytest.raises(FormatError, match="finite"):
        save_eval_table(tmp_path / "t.json", {"a": {0.5: float("nan")}}, method="m")
    assert not (tmp_path / "t.json").exists()
