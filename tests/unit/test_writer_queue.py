"""The SQLite writer queue: write transactions of separate Store instances (or processes) take turns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agentmaestro.store.dialects import WriterQueue, writer_queue


def test_writers_take_turns(tmp_path: Path) -> None:
    db = tmp_path / "maestro.db"
    first, second = WriterQueue(db), WriterQueue(db)  # two open file descriptions, as in two processes
    order: list[str] = []
    entered = threading.Event()

    def other() -> None:
        entered.set()
        with second:
            order.append("second")

    with first:
        thread = threading.Thread(target=other)
        thread.start()
        entered.wait(5)
        time.sleep(0.1)  # the other writer is waiting on the lock by now
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]
    assert (tmp_path / "maestro.db-writer.lock").exists()
    first.close()
    second.close()


def test_postgresql_needs_no_queue() -> None:
    queue = writer_queue("postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    with queue:  # a no-op
        pass
    queue.close()


def test_a_stuck_holder_is_bypassed(tmp_path: Path) -> None:
    """A holder that never lets go (a stopped process) delays others at most max_wait_s, then is skipped."""
    db = tmp_path / "maestro.db"
    stuck, other = WriterQueue(db), WriterQueue(db, max_wait_s=0.05, bypass_s=60)
    with stuck:
        with other:  # waited 0.05 s, then went on without the lock
            pass
        with other:  # within the bypass window: no wait at all
            pass
    with other:
        pass
    stuck.close()
    other.close()
