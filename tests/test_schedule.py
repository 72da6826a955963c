import pytest

from resnet_repro.config import ScheduleConfig
from resnet_repro.training.schedule import LRSchedule


@pytest.mark.parametrize(
    "it,lr",
    [(0, 0.1), (31_999, 0.1), (32_000, 0.01), (47_999, 0.01), (48_000, 0.001), (64_000, 0.001)],
)
def test_paper_schedule(it, lr):
    assert LRSchedule(ScheduleConfig(), 0.1).lr(it) == lr


def test_warmup_switches_when_train_error_below_80_percent():
    s = LRSchedule(ScheduleConfig(warmup=True), 0.1)
    assert s.lr(0) == 0.01
    assert not s.observe_train_error(0.85, 100)
    assert s.lr(100) == 0.01
    assert s.observe_train_error(0.79, 400)
    assert s.lr(400) == 0.1 and s.warmup_ended_at == 400
    assert not s.observe_train_error(0.5, 500)  # switches once
    assert s.lr(32_000) == 0.01 and s.lr(48_000) == 0.001


def test_warmup_never_outlasts_the_first_decay():
    s = LRSchedule(ScheduleConfig(warmup=True), 0.1)
    assert s.lr(31_999) == 0.01 and s.lr(32_000) == 0.01 and s.lr(48_000) == 0.001


def test_warmup_state_round_trip():
    s = LRSchedule(ScheduleConfig(warmup=True), 0.1)
    s.observe_train_error(0.7, 300)
    t = LRSchedule(ScheduleConfig(warmup=True), 0.1)
    t.load_state_dict(s.state_dict())
    assert t.lr(301) == 0.1 and t.warmup_ended_at == 300
