"""The detector's lanes across threads (edge_fer.detect.lanes): detectors in different threads
share the helper pool, and one asking for more threads than the pool had used to shut the
pool down under the others ("cannot schedule new futures after shutdown"). And one Detector
shared by threads keeps each frame's state apart."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from edge_fer.detect import Cascade, Detector
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


def test_a_detector_shared_by_threads_gives_each_frame_its_own_faces():
    """Threads sharing one Detector mixed their frames' state: a frame of another size reset
    the memory while a thread was between its scan and its threshold, so the threshold became
    0 and every window group was reported as a face."""
    # a cascade that accepts every window, and a threshold no group reaches: any face is wrong
    casc = Cascade(
        tdepth=1, codes=np.zeros((1, 1, 4)), leaves=np.full((1, 2), 0.5), thresholds=[-1.0]
    )
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (s, s), dtype=np.uint8) for s in (40, 41)]
    det = Detector(casc, min_size=16, threshold=1e9, threads=1)
    assert det.detect(frames[0]) == [] and det.detect(frames[1]) == []
    wrong: list[int] = []

    def work(k: int) -> None:
        end = time.monotonic() + 2.0
        i = k
        while time.monotonic() < end and not wrong:
            faces = det.detect(frames[i % 2])
            if faces:
                wrong.append(len(faces))
            i += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the race shows within a few frames
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert wrong == [], f"faces reported above a threshold of 1e9: {wrong}"


INTERRUPTED_START = """
import threading
from edge_fer.detect.lanes import run_lanes

real_start = threading.Thread.start

def start(self):
    real_start(self)
    if self.name.startswith("edge-fer-detect"):
        raise KeyboardInterrupt  # Ctrl-C arriving just as a helper thread has started

threading.Thread.start = start
try:
    run_lanes(lambda lane: None, 8, 2)
except KeyboardInterrupt:
    print("interrupted")
"""


def test_a_ctrl_c_while_a_helper_starts_does_not_hang_the_exit() -> None:
    # with ThreadPoolExecutor's lazily started threads the helper was never registered for
    # its exit hook, and the interpreter waited for it forever after "interrupted"
    import subprocess

    p = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_START],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0 and p.stdout.strip() == "interrupted", p.stderr
