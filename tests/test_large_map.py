"""The experiment=large_map preset: a 400 x 400 generated map whose every training tile can burn."""
from firebreak_exp.factory import build_landscapes


def test_large_map_gives_four_times_the_training_tiles(make_cfg):
    cfg = make_cfg(experiment="large_map")
    assert (cfg.landscape.synthetic_rows, cfg.landscape.synthetic_cols, cfg.landscape.grid_size) == (400, 400, 25)
    landscapes = build_landscapes(cfg)
    assert len(landscapes.train) == 208 and len(landscapes.heldout) == 48
    assert min(int(tile.burnable.sum()) for tile in landscapes.train) > 0   # every episode can draw fires
