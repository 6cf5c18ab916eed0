"""16 concurrent clients, 100 queries each, against the running app: every answer right, no leak."""

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from gradio_client import Client, handle_file

CLIENTS, QUERIES, WARM_UP = 16, 100, 50  # warm-up: caches, sessions and the allocator reach steady state


@pytest.mark.load
def test_sixteen_clients_get_every_answer_and_memory_stays_flat(app, catalog_rows, tmp_path):
    queries = []
    for number, row in enumerate(catalog_rows[:CLIENTS]):
        path = tmp_path / f"query-{number}.jpg"
        row["image"].save(path, quality=92)
        queries.append((path, str(row["id"])))

    clients = [Client(app.url, verbose=False, download_files=False) for _ in queries]

    def client_session(number: int, count: int):
        (path, expected), client = queries[number], clients[number]
        latencies, wrong = [], 0
        for _ in range(count):
            started = time.perf_counter()
            _, results = client.predict(image=handle_file(str(path)), k=5, api_name="/recommend")
            latencies.append(time.perf_counter() - started)
            wrong += results[0]["id"] != expected or len(results) != 5
        return latencies, wrong

    with ThreadPoolExecutor(CLIENTS) as pool:  # warm-up: the same clients and sessions as the measured run
        list(pool.map(client_session, range(CLIENTS), [WARM_UP] * CLIENTS))
    time.sleep(2)  # let the last answers' buffers go before sampling
    memory_before = app.resident_bytes()
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        sessions = list(pool.map(client_session, range(CLIENTS), [QUERIES] * CLIENTS))
    elapsed = time.perf_counter() - started
    time.sleep(2)
    memory_after = app.resident_bytes()

    latencies = [latency for session, _ in sessions for latency in session]
    assert len(latencies) == CLIENTS * QUERIES and sum(wrong for _, wrong in sessions) == 0
    growth = memory_after / memory_before - 1
    print(f"\nload: {len(latencies)} queries from {CLIENTS} clients in {elapsed:.1f} s = "
          f"{len(latencies) / elapsed:.1f} queries/s; p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {np.percentile(latencies, 95) * 1000:.0f} ms; resident memory {memory_before / 1e6:.0f} MB -> "
          f"{memory_after / 1e6:.0f} MB ({growth:+.1%})")
    assert growth < 0.05


def test_beyond_the_queue_size_requests_are_refused_at_once_and_the_rest_answered(built_index, catalog_rows,
                                                                                  tmp_path):
    from conftest import RunningApp

    query = tmp_path / "query.jpg"
    catalog_rows[4]["image"].save(query, quality=92)
    app = RunningApp({"INDEX_DIR": str(built_index[0]), "MAX_QUEUE": "2"}, tmp_path / "log").wait_until_ready()
    try:
        def one_query(_):
            try:
                _, results = Client(app.url, verbose=False, download_files=False).predict(
                    image=handle_file(str(query)), k=3, api_name="/recommend")
                return results[0]["id"]
            except Exception as error:  # gradio_client raises its QueueError for "queue_full"
                return f"refused: {error}"

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(one_query, range(24)))
        refused = [answer for answer in answers if answer.startswith("refused")]
        assert refused and all("queue is full" in answer.lower() for answer in refused), refused[:3]
        assert set(answers) - set(refused) == {str(catalog_rows[4]["id"])}  # the others answered, correctly
        assert one_query(0) == str(catalog_rows[4]["id"])  # and the app serves on
    finally:
        app.stop()
