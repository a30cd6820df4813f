"""jaxad.viz: jet colormap values, overlay formula, panel layout and PNG output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxad import viz


def test_jet_matches_segment_data_by_hand():
  # matplotlib's jet: blue (0,0,.5) -> ... -> red (.5,0,0); values computed by hand from its
  # segment data (red: .35->0, .66->1; green: .125->0, .375->1, .64->1; blue: .34->1, .65->0).
  got = viz.jet(np.array([0.0, 1.0, 0.5, 0.25, 0.125, 0.75]))
  expected = np.array([
    [0.0, 0.0, 0.5],
    [0.5, 0.0, 0.0],
    [0.15 / 0.31, 1.0, 1.0 - 0.16 / 0.31],
    [0.0, 0.5, 1.0],
    [0.0, 0.0, 1.0],
    [1.0, 1.0 - 0.11 / 0.27, 0.0],
  ])
  np.testing.assert_allclose(got, expected, atol=1e-6)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(viz.jet(np.array([-3.0, 7.0])), viz.jet(np.array([0.0, 1.0])))


def test_heatmap_overlay_formula_and_gray_images():
  rng = np.random.default_rng(0)
  image = rng.random((2, 8, 8, 1)).astype(np.float32)
  heat = rng.random((2, 8, 8)).astype(np.float32)
  out = viz.heatmap_overlay(image, heat)
  expected = 0.7 * viz.jet(heat) + 0.3 * np.repeat(image, 3, axis=-1)
  np.testing.assert_allclose(out, expected, atol=1e-6)
  assert out.shape == (2, 8, 8, 3) and out.min() >= 0 and out.max() <= 1
  rgb = rng.random((8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(viz.heatmap_overlay(rgb, heat[0], alpha=0.0), rgb, atol=1e-7)
  with pytest.raises(ValueError, match="shapes"):
    viz.heatmap_overlay(rgb, heat)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    viz.heatmap_overlay(rgb * 255, heat[0])
  with pytest.raises(ValueError, match="alpha"):
    viz.heatmap_overlay(rgb, heat[0], alpha=1.5)
  with pytest.raises(ValueError, match="NaN"):
    viz.heatmap_overlay(rgb, np.full((8, 8), np.nan))


def test_save_panels_layout_and_content(tmp_path):
  rng = np.random.default_rng(1)
  n, h, w = 3, 12, 10
  images = rng.random((n, h, w, 3)).astype(np.float32)
  recs = np.clip(images + 0.2, 0, 1)
  maps = rng.random((n, h, w)).astype(np.float32) * 5
  masks = (rng.random((n, h, w)) > 0.5).astype(np.float32)
  path = viz.save_panels(tmp_path / "sub" / "panels.png", images, maps, reconstructions=recs,
                         masks=masks, max_rows=2, annotate=False)
  png = np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255
  gap, cols, rows = 2, 5, 2
  assert png.shape == (rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3)

  def cell(r, c):
    return png[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w]

  q = 1 / 255 + 1e-6  # 8-bit quantisation
  np.testing.assert_allclose(cell(1, 0), images[1], atol=q)  # input
  np.testing.assert_allclose(cell(1, 1), recs[1], atol=q)  # reconstruction
  residual = np.abs(images[1] - recs[1]).mean(-1)
  np.testing.assert_allclose(cell(1, 2), np.repeat(residual[..., None], 3, -1), atol=q)
  heat = (maps[:2] - maps[:2].min()) / (maps[:2].max() - maps[:2].min())  # display range: shown rows
  np.testing.assert_allclose(cell(0, 3), viz.heatmap_overlay(images[0], heat[0]), atol=q)
  np.testing.assert_allclose(cell(1, 4), np.repeat(masks[1][..., None], 3, -1), atol=q)
  assert np.all(png[h:h + gap] == 1.0)  # white separator row


def test_save_panels_skips_absent_columns_and_uses_given_range(tmp_path):
  rng = np.random.default_rng(2)
  images = rng.random((2, 6, 6, 1)).astype(np.float32)
  maps = np.full((2, 6, 6), 0.5, np.float32)
  grid = viz.make_panels(images, maps, vmin=0.0, vmax=1.0, gap=0, annotate=False)
  assert grid.shape == (12, 12, 3)  # input | heatmap
  np.testing.assert_allclose(grid[:6, 6:], viz.heatmap_overlay(images[0], maps[0]), atol=1e-6)
  path = viz.save_panels(tmp_path / "p.png", images, maps, masks=np.zeros((2, 6, 6)), annotate=False)
  assert Image.open(path).size == (3 * 6 + 2 * 2, 2 * 6 + 2)


def test_panel_errors(tmp_path):
  images = np.zeros((2, 6, 6, 3), np.float32)
  maps = np.zeros((2, 6, 6), np.float32)
  with pytest.raises(ValueError, match=".png"):
    viz.save_panels(tmp_path / "p.jpg", images, maps)
  with pytest.raises(ValueError, match="maps must be"):
    viz.make_panels(images, maps[:, :5])
  with pytest.raises(ValueError, match="non-empty"):
    viz.make_panels(images[:0], maps[:0])
  with pytest.raises(ValueError, match="reconstructions"):
    viz.make_panels(images, maps, reconstructions=images[:, :5])
  with pytest.raises(ValueError, match="masks"):
    viz.make_panels(images, maps, masks=maps[:, :4])
  with pytest.raises(ValueError, match="max_rows"):
    viz.make_panels(images, maps, max_rows=0)
  with pytest.raises(ValueError, match="channels"):
    viz.make_panels(np.zeros((2, 6, 6, 2)), maps)


def test_annotated_panel_cells_colour_bar_and_captions():
  rng = np.random.default_rng(3)
  n, h, w = 4, 40, 36
  images = rng.random((n, h, w, 3)).astype(np.float32)
  maps = rng.random((n, h, w)).astype(np.float32)
  masks = (rng.random((n, h, w)) > 0.5).astype(np.float32)
  kw = dict(masks=masks, names=[f"test/crack/{i:03d}.png" for i in range(n)], labels=[1, 1, 0, 0],
            scores=[0.9, 0.2, 0.8, 0.1], threshold=0.5, vmin=-1.0, vmax=2.0, title="a title")
  grid, layout = viz.make_panels(images, maps, return_layout=True, **kw)
  assert layout["columns"] == ["input", "anomaly map", "gt mask"] and layout["range"] == (-1.0, 2.0)
  heat = (maps - (-1.0)) / 3.0  # the given range, the same for every row
  for i in range(n):
    top, left = layout["cells"][(i, 0)]
    np.testing.assert_allclose(grid[top:top + h, left:left + w], images[i], atol=1e-6)
    top, left = layout["cells"][(i, 1)]
    np.testing.assert_allclose(grid[top:top + h, left:left + w],
                               viz.heatmap_overlay(images[i], heat[i]), atol=1e-6)
  top, left, bar_h, bar_w = layout["colorbar"]
  np.testing.assert_allclose(grid[top + bar_h // 2, left:left + bar_w],
                             viz.jet(np.linspace(0, 1, bar_w)), atol=1e-6)
  # Captions are drawn left of the cells: ink in the caption column of every row, and a row's
  # decision colour is green (right) or red (wrong): rows 1 (anomalous, 0.2 < 0.5) and 2 (normal,
  # 0.8 >= 0.5) are wrong.
  cap_left = layout["cells"][(0, 0)][1]
  row_tops = [layout["cells"][(i, 0)][0] for i in range(n)] + [layout["colorbar"][0]]
  for i in range(n):
    caption = grid[row_tops[i]:row_tops[i + 1], :cap_left]
    assert caption.min() < 0.5
    red = caption[..., 0] - caption[..., 1] > 0.3
    green = caption[..., 1] - caption[..., 0] > 0.2
    assert (red.any(), green.any()) == ((True, False) if i in (1, 2) else (False, True)), i
  # The text depends on the data: another file name changes the caption pixels.
  other = viz.make_panels(images, maps, **{**kw, "names": ["x.png"] * n})
  assert other.shape != grid.shape or not np.array_equal(other, grid)
  bare = viz.make_panels(images, maps, masks=masks, annotate=False)
  assert bare.shape == (n * h + (n - 1) * 2, 3 * w + 2 * 2, 3)


def test_select_examples_takes_both_classes_best_to_worst():
  labels = np.array([0, 1, 0, 1, 1, 0, 1, 0, 0])
  scores = np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.4, 0.8, 0.05])
  idx = viz.select_examples(labels, scores, 4)
  np.testing.assert_array_equal(idx, [1, 3, 7, 8])  # anomalous: top and bottom; normal: same
  assert list(viz.select_examples(labels, scores, 5)) == [1, 6, 3, 7, 8]  # ranks 0, 2, 3
  assert sorted(viz.select_examples(labels, scores, 100)) == list(range(9))
  only_normal = viz.select_examples(np.zeros(3, int), np.arange(3.0), 2)
  np.testing.assert_array_equal(only_normal, [2, 0])
  with pytest.raises(ValueError, match="labels"):
    viz.select_examples([0, 2], [0.1, 0.2], 2)
  with pytest.raises(ValueError, match="n must be"):
    viz.select_examples([0, 1], [0.1, 0.2], 0)


def test_annotation_errors():
  images = np.zeros((2, 6, 6, 3), np.float32)
  maps = np.zeros((2, 6, 6), np.float32)
  with pytest.raises(ValueError, match="names"):
    viz.make_panels(images, maps, names=["a"])
  with pytest.raises(ValueError, match="labels"):
    viz.make_panels(images, maps, labels=[0, 3])
  with pytest.raises(ValueError, match="scores"):
    viz.make_panels(images, maps, scores=[0.1, np.nan])
  with pytest.raises(ValueError, match="threshold"):
    viz.make_panels(images, maps, scores=[0.1, 0.2], threshold=np.inf)
