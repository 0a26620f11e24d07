"""
Prometheus metrics: a C{twist tus} subprocess is scraped at C{/metrics}
after real uploads, and every metric of docs/metrics.md is there with a
plausible value; registries of two servers stay apart.
"""

from __future__ import annotations

import socket

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families

from tests import faultkit
from tests.tushttp import TUS, create, patch
from txtus.metrics import PrometheusMetrics

METRICS = {
    "txtus_requests": "counter", "txtus_errors": "counter", "txtus_bytes_received": "counter",
    "txtus_uploads_created": "counter", "txtus_uploads_finished": "counter",
    "txtus_uploads_terminated": "counter", "txtus_open_connections": "gauge",
    "txtus_active_uploads": "gauge", "txtus_hook_calls": "counter", "txtus_hook_failures": "counter",
    "txtus_request_duration_seconds": "histogram", "txtus_store_operation_duration_seconds": "histogram",
}


def scrape(port: int, path: bytes = b"/metrics") -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}, checking the families' types."""
    reply = faultkit.call(port, b"GET", path)
    assert reply.status == 200, reply
    assert reply.header(b"content-type").startswith(b"text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(reply.body.decode("utf-8")):
        if family.name in METRICS:
            assert family.type == METRICS[family.name], family
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_twist_tus_metrics_after_uploads(tmp_path):
    server = faultkit.TwistProcess(tmp_path / "uploads", tmp_path)
    try:
        port = server.port
        empty = scrape(port)
        # Every family is declared from the start, hooks included.
        for name in METRICS:
            assert f"# TYPE {name}" in faultkit.call(port, b"GET", b"/metrics").body.decode()
        assert value(empty, "txtus_uploads_created_total") == 0

        data = bytes(range(256)) * 400  # 102,400 bytes
        finished = faultkit.create(port, len(data))
        assert faultkit.patch(port, finished, 0, data[:60_000]).status == 204
        assert faultkit.patch(port, finished, 60_000, data[60_000:]).status == 204
        terminated = faultkit.create(port, 10)
        assert faultkit.call(port, b"DELETE", faultkit.target(terminated)).status == 204
        assert faultkit.patch(port, finished, 5, b"x").status == 409
        assert faultkit.call(port, b"HEAD", faultkit.target("nosuchupload")).status == 404

        # A body half sent: an active upload and an open connection.
        hanging = faultkit.create(port, 1000)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(faultkit.patch_request(hanging, 0, b"y" * 100, length=1000))
            faultkit.wait_until(lambda: server.stored_size(hanging) == 100, "the first bytes to be stored")
            during = scrape(port)
        assert value(during, "txtus_active_uploads") == 1
        assert value(during, "txtus_open_connections") >= 2  # the scrape and the hanging PATCH
        faultkit.wait_until(lambda: value(scrape(port), "txtus_active_uploads") == 0, "the cut body to end")

        after = scrape(port)
        assert value(after, "txtus_uploads_created_total") == 3
        assert value(after, "txtus_uploads_finished_total") == 1
        assert value(after, "txtus_uploads_terminated_total") == 1
        assert value(after, "txtus_bytes_received_total") == len(data) + 100
        assert value(after, "txtus_requests_total", method="POST", status="201") == 3
        assert value(after, "txtus_requests_total", method="PATCH", status="204") == 2
        assert value(after, "txtus_requests_total", method="PATCH", status="409") == 1
        assert value(after, "txtus_requests_total", method="DELETE", status="204") == 1
        assert value(after, "txtus_requests_total", method="HEAD", status="404") == 1
        assert value(after, "txtus_errors_total", code="ERR_MISMATCHED_OFFSET") == 1
        assert value(after, "txtus_errors_total", code="ERR_UPLOAD_NOT_FOUND") == 1
        assert value(after, "txtus_errors_total", code="ERR_UNEXPECTED_EOF") == 1
        assert value(after, "txtus_open_connections") >= 1
        assert value(after, "txtus_request_duration_seconds_count", method="PATCH") == 4
        assert 0 < value(after, "txtus_request_duration_seconds_sum", method="PATCH") < 60
        assert value(after, "txtus_request_duration_seconds_bucket", method="PATCH", le="+Inf") == 4
        for operation, at_least in (("new_upload", 3), ("get_upload", 5), ("open_chunk", 3), ("commit", 3),
                                    ("finish", 1), ("terminate", 1), ("lock", 6), ("get_info", 3)):
            count = value(after, "txtus_store_operation_duration_seconds_count", operation=operation)
            assert count >= at_least, (operation, count)
            assert 0 <= value(after, "txtus_store_operation_duration_seconds_sum", operation=operation) < 60
        # The process collector of the client: a process of its own.
        assert value(after, "process_open_fds") > 0
        assert value(after, "process_resident_memory_bytes") > 1 << 20
        server.assert_clean_log()
    finally:
        server.stop()


def test_metrics_path_and_disable(tmp_path):
    server = faultkit.TwistProcess(tmp_path / "a", tmp_path, "--metrics-path", "/internal/prom")
    try:
        assert faultkit.call(server.port, b"GET", b"/metrics").status == 404
        assert "txtus_uploads_created_total" in scrape(server.port, b"/internal/prom")
    finally:
        server.stop()
    log_dir = tmp_path / "b"
    log_dir.mkdir()
    server = faultkit.TwistProcess(tmp_path / "b-uploads", log_dir, "--disable-metrics")
    try:
        assert faultkit.call(server.port, b"GET", b"/metrics").status == 404
    finally:
        server.stop()


def test_hook_api_counts_by_event():
    metrics = PrometheusMetrics()
    metrics.hook_called("pre-create")
    metrics.hook_called("pre-create")
    metrics.hook_failed("pre-create")
    metrics.hook_called("post-finish")
    get = metrics.registry.get_sample_value
    assert get("txtus_hook_calls_total", {"event": "pre-create"}) == 2
    assert get("txtus_hook_calls_total", {"event": "post-finish"}) == 1
    assert get("txtus_hook_failures_total", {"event": "pre-create"}) == 1
    assert get("txtus_hook_failures_total", {"event": "post-finish"}) is None


@pytest_twisted.ensureDeferred
async def test_two_servers_in_one_process_count_apart(server_factory):
    one, two = PrometheusMetrics(), PrometheusMetrics()
    first = await server_factory(metrics=one)
    second = await server_factory(metrics=two)
    location = await create(first, 3)
    assert (await patch(location, 0, b"abc")).code == 204
    await create(second, 3)
    assert one.registry.get_sample_value("txtus_uploads_created_total") == 1
    assert two.registry.get_sample_value("txtus_uploads_created_total") == 1
    assert one.registry.get_sample_value("txtus_bytes_received_total") == 3
    assert two.registry.get_sample_value("txtus_bytes_received_total") == 0
    response = await treq.get(f"http://127.0.0.1:{first.port_number}/metrics")
    assert response.code == 200
    assert b"txtus_uploads_created_total 1.0" in await response.content()


@pytest_twisted.ensureDeferred
async def test_metrics_off_serves_nothing_and_changes_nothing(server):
    assert (await treq.get(f"http://127.0.0.1:{server.port_number}/metrics")).code == 404
    location = await create(server, 3)
    assert (await patch(location, 0, b"abc")).code == 204
    assert (await treq.head(location, headers=TUS)).code == 200


@pytest_twisted.ensureDeferred
async def test_openmetrics_when_the_scraper_asks_for_it(server_factory):
    server = await server_factory(metrics=PrometheusMetrics())
    await create(server, 3)
    response = await treq.get(f"http://127.0.0.1:{server.port_number}/metrics",
                              headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers.getRawHeaders("content-type")[0].startswith("application/openmetrics-text")
    body = await response.content()
    assert b"txtus_uploads_created_total 1.0" in body
    assert body.endswith(b"# EOF\n")


@pytest_twisted.ensureDeferred
async def test_hook_calls_and_failures_are_counted_by_event(server_factory):
    from txtus.hooks.inprocess import HookFunctions

    def broken(request):
        raise RuntimeError("the hook's own bug")

    metrics = PrometheusMetrics()
    hooks = HookFunctions(pre_create=lambda request: None, pre_finish=broken)
    server = await server_factory(hooks=hooks, hook_events=frozenset({"pre-create", "pre-finish"}),
                                  metrics=metrics)
    location = await create(server, 3)
    assert (await patch(location, 0, b"abc")).code == 500  # pre-finish failed
    get = metrics.registry.get_sample_value
    assert get("txtus_hook_calls_total", {"event": "pre-create"}) == 1
    assert get("txtus_hook_calls_total", {"event": "pre-finish"}) == 1
    assert get("txtus_hook_failures_total", {"event": "pre-finish"}) == 1
    assert get("txtus_hook_failures_total", {"event": "pre-create"}) is None
    assert get("txtus_errors_total", {"code": "ERR_HOOK_FAILED"}) == 1
