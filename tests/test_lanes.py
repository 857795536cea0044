"""The detector's lanes across threads (edge_fer.detect.lanes): detectors in different threads
share the helper pool, and one asking for more threads than the pool had used to shut the
pool down under the others ("cannot schedule new futures after shutdown")."""

from __future__ import annotations

import threading

from edge_fer.detect.lanes import run_lanes


def test_detectors_in_threads_with_different_thread_counts() -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def busy() -> None:
        out = [0] * 8
        try:
            while not stop.is_set():
                run_lanes(lambda lane: out.__setitem__(lane, lane), 8, 2)
                assert out == list(range(8))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    workers = [threading.Thread(target=busy) for _ in range(2)]
    for t in workers:
        t.start()
    try:
        for k in range(3, 40):  # each a larger pool than the last
            seen: list[int] = []
            run_lanes(seen.append, 16, k)
            assert sorted(seen) == list(range(16))
    finally:
        stop.set()
        for t in workers:
            t.join()
    assert not errors, errors[0]
