"""jaxad.results: JSON round trip, collection, and the Markdown table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxad import results


def _fill(root):
  results.write_results(root, "ramfae", "bottle", {"image_auroc": 0.95123, "pixel_auroc": 0.9})
  results.write_results(root, "ramfae", "cable", {"image_auroc": np.float32(0.8), "pixel_auroc": 0.7})
  results.write_results(root, "smcc", "bottle", {"image_auroc": 1.0, "pixel_auroc": 0.98})
  results.write_results(root, "smcc", "cable", {"image_auroc": 0.9666, "pixel_auroc": 0.975})


def test_write_and_collect_round_trip(tmp_path):
  path = results.write_results(tmp_path, "ramfae", "bottle", {"image_auroc": np.float64(0.95123)})
  assert path == tmp_path / "ramfae" / "bottle.json"
  record = json.loads(path.read_text())
  assert record["method"] == "ramfae" and record["category"] == "bottle"
  assert record["metrics"] == {"image_auroc": 0.95123}
  _fill(tmp_path)
  (tmp_path / "notes.json").write_text('{"something": "else"}')  # ignored: not a results file
  table = results.collect_results(tmp_path)
  assert list(table) == ["ramfae", "smcc"]
  assert list(table["ramfae"]) == ["bottle", "cable"]
  assert table["ramfae"]["cable"]["image_auroc"] == pytest.approx(0.8, abs=1e-7)
  assert table["smcc"]["cable"]["pixel_auroc"] == 0.975


def test_markdown_table_values_mean_row_and_format(tmp_path):
  _fill(tmp_path)
  md = results.markdown_table(results.collect_results(tmp_path), "image_auroc")
  lines = md.strip().splitlines()
  assert "Image AUROC" in lines[0] and "%" in lines[0] and "1 decimal" in lines[0]
  assert lines[2] == "| Category | ramfae | smcc |"
  assert lines[3] == "| --- | ---: | ---: |"
  assert lines[4] == "| bottle | 95.1 | 100.0 |"
  assert lines[5] == "| cable | 80.0 | 96.7 |"
  # Mean of unrounded values: (0.95123 + 0.8) / 2 = 87.56 -> 87.6; (1 + 0.9666) / 2 = 98.33 -> 98.3.
  assert lines[6] == "| **Mean** | 87.6 | 98.3 |"
  assert len(lines) == 7


def test_markdown_table_missing_entries_and_options(tmp_path):
  _fill(tmp_path)
  results.write_results(tmp_path, "smcc", "screw", {"image_auroc": 0.5})
  table = results.collect_results(tmp_path)
  md = results.markdown_table(table, "image_auroc", methods=["smcc", "ramfae"], decimals=2)
  assert "| screw | 50.00 | – |" in md
  assert "| **Mean** | 82.22 | 87.56* |" in md  # (1 + .9666 + .5) / 3; ramfae over 2 of 3
  assert "mean over the categories available" in md
  md = results.markdown_table(table, "pixel_auroc", categories=["cable"], percent=False, decimals=3)
  assert "| cable | 0.700 | 0.975 |" in md and "fraction" in md
  both = results.markdown_tables(table)
  assert "Image AUROC" in both and "Pixel AUROC" in both and both.count("**Mean**") == 2


def test_results_errors(tmp_path):
  with pytest.raises(ValueError, match="method"):
    results.write_results(tmp_path, "../evil", "bottle", {"a": 1.0})
  with pytest.raises(ValueError, match="category"):
    results.write_results(tmp_path, "m", "", {"a": 1.0})
  with pytest.raises(ValueError, match="not finite"):
    results.write_results(tmp_path, "m", "bottle", {"a": float("nan")})
  with pytest.raises(ValueError, match="non-empty dict"):
    results.write_results(tmp_path, "m", "bottle", {})
  with pytest.raises(ValueError, match="must be a number"):
    results.write_results(tmp_path, "m", "bottle", {"a": "high"})
  with pytest.raises(FileNotFoundError):
    results.collect_results(tmp_path / "missing")
  _fill(tmp_path)
  table = results.collect_results(tmp_path)
  with pytest.raises(ValueError, match="not found"):
    results.markdown_table(table, "aupro")
  with pytest.raises(ValueError, match="not in the table"):
    results.markdown_table(table, "image_auroc", methods=["scgan"])
  with pytest.raises(ValueError, match="no methods"):
    results.markdown_table({}, "image_auroc")


def test_dataset_name_comes_from_the_users_data(tmp_path):
  mine = tmp_path / "Gear parts (v2)"
  mine.mkdir()
  assert results.dataset_name("folder", mine) == "Gear_parts_v2"
  assert results.dataset_name("folder", tmp_path / "my_parts") == "my_parts"
  assert results.dataset_name("mvtec", tmp_path / "mvtec_ad", category="bottle") == "bottle"
  assert results.dataset_name("mvtec", tmp_path / "mvtec_ad" / "cable") == "cable"
  assert results.dataset_name("btad", tmp_path, product="01") == "01"
  assert results.dataset_name("mnist", tmp_path / "mnist", normal_class=7) == "mnist_class7"
  assert results.dataset_name("elpv", None) == "elpv"
  name = results.dataset_name("folder", mine)
  path = results.write_results(tmp_path / "res", "smcc", name, {"image_auroc": 0.5}, dataset="folder")
  record = results.load_results(path)
  assert record["category"] == name and record["dataset"] == "folder"
