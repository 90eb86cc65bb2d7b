"""Progress read off the bars scripts draw themselves (tqdm, HF, accelerate, Lightning)."""

from __future__ import annotations

import pytest

from nbexec.runner.textprogress import parse_progress


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Hugging Face's Trainer (tqdm)
        (" 45%|████▌     | 9/20 [00:04<00:05,  2.01it/s]",
         {"step": 9, "total": 20, "rate": 2.01, "eta_s": 5.0}),
        # tqdm with a description and a postfix
        ("Epoch 0:  45%|████▌     | 9/20 [00:04<00:05,  2.01it/s, loss=0.3]",
         {"step": 9, "total": 20, "rate": 2.01, "eta_s": 5.0, "desc": "Epoch 0"}),
        # slow steps: seconds per iteration
        (" 12%|█▎        | 4/32 [00:10<01:10,  2.50s/it]",
         {"step": 4, "total": 32, "rate": 0.4, "eta_s": 70.0}),
        # before the first rate is known
        ("  3%|▎         | 1/32 [00:00<?, ?it/s]", {"step": 1, "total": 32}),
        # Lightning's rich bar
        ("Epoch 0/2 ━━━━━━━━━━━━━━━━━━━━━━━━━ 4/8 0:00:02 • 0:00:02 2.31it/s v_num: 7be5",
         {"step": 4, "total": 8, "rate": 2.31, "eta_s": 2.0, "desc": "Epoch 0/2"}),
        # two bars on one line: the last is the one on screen
        ("a: 100%|█| 2/2 [00:01<00:00, 2.0it/s] b:  50%|▌| 1/2 [00:01<00:01, 1.0it/s]",
         {"step": 1, "total": 2, "rate": 1.0, "eta_s": 1.0, "desc": "b"}),
    ],
)
def test_bars_become_progress(line: str, expected: dict) -> None:
    progress = parse_progress(line)
    assert progress is not None
    assert {k: v for k, v in progress.items() if k not in ("kind", "source")} == pytest.approx(expected)
    assert progress["kind"] == "progress" and progress["source"] == "text"


@pytest.mark.parametrize("line", ["loss 0.3 at step 4/10", "epoch 1/3 done", "2026/11/29 12:00", ""])
def test_lines_that_are_not_bars_give_nothing(line: str) -> None:
    assert parse_progress(line) is None
