"""PgQueuer beside batchctl's durable-queue bench (issue 13, target 5).

Enqueues N no-op jobs into a fresh database, then times PgQueuer workers draining them with the
given dequeue batch size (100 by default, as the issue's figure was measured), and prints one
JSON line. Workers run in `--processes` processes (Python runs one core per process), each one
queue manager on a connection of its own. Run by `cargo bench -p
batchctl-scheduler --bench throughput -- --peer pgqueuer` against the same Postgres as
batchctl's runs; needs `pip install pgqueuer==1.6.0 asyncpg`.

    python3 pgqueuer_drain.py --dsn postgres://postgres@127.0.0.1:55432/postgres --jobs 20000
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import time
import urllib.parse
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.domain.types import QueueExecutionMode


def database_url(dsn: str, database: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


# How long a worker process may take to get ready, and the whole drain; past either the run
# fails rather than waits for a process that died.
READY_SECONDS = 60
DRAIN_SECONDS = 600


async def drain(url: str, batch_size: int, barrier) -> tuple[int, float, float]:
    """Runs one queue manager until the queue is empty: (jobs run, start, end)."""
    done = 0
    connection = await asyncpg.connect(url)
    manager = QueueManager(Queries(AsyncpgDriver(connection)))

    @manager.entrypoint("noop")
    async def noop(job: Job) -> None:
        nonlocal done
        done += 1

    barrier.wait(READY_SECONDS)
    started = time.time()
    await manager.run(
        batch_size=batch_size,
        mode=QueueExecutionMode.drain,
        log_aggregation_interval=timedelta(0),
    )
    ended = time.time()
    await connection.close()
    return done, started, ended


def drain_process(url: str, batch_size: int, barrier, results) -> None:
    """Puts the drain's figures, or its error, so the parent never waits on a dead process."""
    try:
        results.put(asyncio.run(drain(url, batch_size, barrier)))
    except BaseException as error:  # reported to the parent, which fails the run
        barrier.abort()
        results.put(f"{type(error).__name__}: {error}")


async def enqueue(url: str, jobs: int, enqueue_batch: int) -> float:
    """Installs PgQueuer and enqueues `jobs` no-op jobs; returns seconds taken."""
    connection = await asyncpg.connect(url)
    queries = Queries(AsyncpgDriver(connection))
    await queries.install()
    started = time.perf_counter()
    for offset in range(0, jobs, enqueue_batch):
        n = min(enqueue_batch, jobs - offset)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    seconds = time.perf_counter() - started
    await connection.close()
    return seconds


async def left_in_queue(url: str) -> int:
    connection = await asyncpg.connect(url)
    left = await connection.fetchval("SELECT count(*) FROM pgqueuer")
    await connection.close()
    return left


async def admin(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn)
    await connection.execute(statement)
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--enqueue-batch", type=int, default=1_000)
    parser.add_argument("--processes", type=int, default=2)
    arguments = parser.parse_args()
    name = f"pgqueuer_bench_{os.getpid()}"
    url = database_url(arguments.dsn, name)
    asyncio.run(admin(arguments.dsn, f"DROP DATABASE IF EXISTS {name}"))
    asyncio.run(admin(arguments.dsn, f"CREATE DATABASE {name}"))
    try:
        enqueue_seconds = asyncio.run(enqueue(url, arguments.jobs, arguments.enqueue_batch))
        barrier = multiprocessing.Barrier(arguments.processes)
        results = multiprocessing.Queue()
        processes = [
            multiprocessing.Process(
                target=drain_process,
                args=(url, arguments.batch_size, barrier, results),
            )
            for _ in range(arguments.processes)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=DRAIN_SECONDS) for _ in processes]
        for process in processes:
            process.join()
        failed = [outcome for outcome in outcomes if isinstance(outcome, str)]
        if failed:
            raise SystemExit(f"a pgqueuer worker process failed: {failed}")
        done = sum(outcome[0] for outcome in outcomes)
        drain_seconds = max(o[2] for o in outcomes) - min(o[1] for o in outcomes)
        left = asyncio.run(left_in_queue(url))
        if done != arguments.jobs or left != 0:
            raise SystemExit(f"pgqueuer ran {done} of {arguments.jobs} jobs, {left} left")
    finally:
        asyncio.run(admin(arguments.dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    print(
        json.dumps(
            {
                "peer": "pgqueuer",
                "jobs": arguments.jobs,
                "batch_size": arguments.batch_size,
                "processes": arguments.processes,
                "enqueue_per_second": round(arguments.jobs / enqueue_seconds),
                "drain_per_second": round(arguments.jobs / drain_seconds),
            }
        )
    )


if __name__ == "__main__":
    main()
