"""Writer for test_store_streams.py (not a test module): several named streams into one store.

``python stream_writer.py STORE SEED STREAMS`` appends forever, interleaving the streams' steps
at random, and prints ``ack <stream> <rows>`` (os.write, unbuffered) each time a stream episode
has been written whole (``stream_rows`` = rows). A restarted writer continues every stream at its
``stream_rows`` (what a learner does after kill -9). Row content is a pure function of
(stream, seq): ``row_obs``.
"""
from __future__ import annotations

import os
import sys

import gymnasium as gym
import numpy as np

from roborl.store.store import ReplayStore

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def row_obs(stream: int, seq: int) -> np.ndarray:
    """The observation of (stream, seq): next_obs of seq is row_obs(stream, seq + 1)."""
    return np.array([stream, seq, stream * 1000 + seq * 0.25], np.float32)


def main() -> None:
    path, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    st = ReplayStore.open_or_create(path, env_id="streams", observation_space=OBS, action_space=ACT,
                                    chunk_rows=16, online_capacity=10 ** 6)
    names = [f"actor{i}" for i in range(n)]
    seq = {s: st.stream_rows(s) for s in names}
    left = {s: 0 for s in names}
    while True:
        i = int(rng.integers(n))
        s = names[i]
        if left[s] == 0:
            st.start_episode(row_obs(i, seq[s]), stream=s)
            left[s] = int(rng.integers(1, 12))
        left[s] -= 1
        end = left[s] == 0
        cut = end and rng.random() < 0.3  # some episodes end without a terminal flag (interrupted)
        q = seq[s]
        st.add_step(action=np.array([i, q], np.float32) / 1e6, reward=float(q), next_obs=row_obs(i, q + 1),
                    terminated=end and not cut, truncated=False, is_success=bool(q % 7 == 0), stream=s)
        seq[s] += 1
        if cut:
            st.end_episode(stream=s)
        if end:
            os.write(1, f"ack {s} {st.stream_rows(s)}\n".encode())


if __name__ == "__main__":
    main()
