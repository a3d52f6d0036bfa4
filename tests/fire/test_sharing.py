"""FireExchange: worker processes burning each other's fires."""
import numpy as np


def test_fire_exchange_queues_the_longest_fires_first(monkeypatch):
    """A worker asking again for fires it has burned queues them longest first (by their last burn's seconds:
    here a clock that each fire advances by its ignition row), and the arrival times come back in the order
    asked."""
    import multiprocessing as mp
    from firebreak_exp.fire import sharing

    offset = [0.0]
    clock = sharing.time.perf_counter
    monkeypatch.setattr(sharing.time, "perf_counter", lambda: clock() + offset[0])
    burned = []

    class RowSecondsSimulator:
        fires_simulated = 0

        def arrival_times(self, ignitions, fuel_breaks=None):
            row = int(ignitions[0, 0])
            burned.append(row)
            offset[0] += row
            self.fires_simulated += 1
            return np.full((1, 2, 2), float(row))

    context = mp.get_context("spawn")
    exchange = sharing.FireExchange(0, context.Queue(), [context.Queue()])
    exchange.wrap(lambda tile, scenario: RowSecondsSimulator(), ["tile"], None)
    ignitions = np.array([[1, 0], [3, 0], [2, 0], [5, 0]])
    for _ in range(2):
        arrival, fires = exchange.burn(0, ignitions, None)
        assert fires == 4 and arrival[:, 0, 0].tolist() == [1.0, 3.0, 2.0, 5.0]
    assert burned == [1, 3, 2, 5, 5, 3, 2, 1]
