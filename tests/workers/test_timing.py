"""Timer laps: each lap adds the seconds since the previous one to its phase."""

import time

from mindspeed_rl.workers.timing import Timer


def test_laps_split_a_sequence_into_its_phases():
    timer = Timer()
    time.sleep(0.05)
    timer.lap("first")
    time.sleep(0.01)
    timer.lap("second")
    time.sleep(0.02)
    timer.lap("second")
    assert set(timer.seconds) == {"first", "second"}
    assert 0.05 <= timer.seconds["first"] < 0.5
    assert 0.03 <= timer.seconds["second"] < timer.seconds["first"] + 0.5
