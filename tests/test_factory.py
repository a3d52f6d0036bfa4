"""Building environments from a config: ``parallel.num_envs=auto``."""
import logging
import os

from firebreak_exp.factory import AUTO_FALLBACK_NUM_ENVS, resolve_parallel


def test_num_envs_auto_without_a_recommendation_falls_back_with_a_warning(make_cfg, tmp_path, caplog):
    cfg = make_cfg("parallel.num_envs=auto")
    with caplog.at_level(logging.WARNING, logger="firebreak_exp.factory"):
        resolved = resolve_parallel(cfg, tmp_path / "absent.json")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert resolved["num_envs"] == min(AUTO_FALLBACK_NUM_ENVS, cores)
    assert "no benchmark recommendation" in caplog.text
    (tmp_path / "broken.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="firebreak_exp.factory"):
        assert resolve_parallel(cfg, tmp_path / "broken.json")["num_envs"] >= 1
    assert "unreadable" in caplog.text
    assert resolve_parallel(make_cfg("parallel.num_envs=3"), tmp_path / "absent.json")["num_envs"] == 3
