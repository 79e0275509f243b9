"""The command line as an operator meets it: --help everywhere, and `nudge dev` up, ready and cleanly down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import requests

pytestmark = pytest.mark.integration

COMMANDS = ["worker", "gateway", "dev", "cluster", "demo", "simulate", "replay", "eval", "bench", "faults"]


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_every_command_has_help(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *command, "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "usage: nudge" in result.stdout


def test_worker_without_settings_says_which_variable_is_missing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "KAFKA_"))}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 2
    assert "NUDGE_WRITE_KEYS" in result.stderr


def test_gateway_without_settings_says_which_variable_is_missing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUDGE_", "KAFKA_", "REDIS_"))}
    env["NUDGE_WS_ORIGINS"] = "shop.example"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "gateway"], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 2
    assert "NUDGE_WS_ORIGINS: 'shop.example' is not an origin" in result.stderr


def test_dev_prints_one_ready_line_serves_and_stops_everything_on_sigint(tmp_path: object) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        ready = orjson.loads(process.stdout.readline())
        assert ready["ready"] is True
        assert set(ready) >= {"http", "kafka", "redis", "write_key", "api_key", "ws", "store"}
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 3  # the broker, the worker and the gateway
        store = requests.get(ready["store"], timeout=10)
        assert store.status_code == 200 and "/nudge.js" in store.text

        sent = requests.post(
            f"{ready['http']}/v1/track",
            json={"userId": "cli-user", "event": "Product Viewed"},
            auth=(ready["write_key"], ""),
            timeout=10,
        )
        assert sent.json() == {"success": True}

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if process.poll() is None:
            process.kill()


def test_cluster_runs_two_workers_and_two_gateways_that_all_serve_then_stops_them_all() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "cluster", "--workers", "2", "--gateways", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = orjson.loads(process.stdout.readline())
        assert len(ready["workers"]) == 2 and len(ready["gateways"]) == 2
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 5  # the broker, two workers, two gateways
        for worker in ready["workers"]:
            assert requests.get(f"{worker}/health", timeout=10).status_code == 200
        for gateway in ready["gateways"]:
            http = gateway.replace("ws://", "http://").removesuffix("/v1/ws")
            assert requests.get(f"{http}/health", timeout=10).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if process.poll() is None:
            process.kill()


def test_a_demo_stopped_with_ctrl_c_says_so_without_a_traceback(tmp_path: Path) -> None:
    output = tmp_path / "output"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "demo", "--rate", "300", "--users", "300"], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 120
        while output.read_bytes().count(b"events/s") < 2 and time.monotonic() < deadline:  # sending, mid-run
            assert process.poll() is None, output.read_text()
            time.sleep(0.2)
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not [c for c in alive if c.status() != psutil.STATUS_ZOMBIE], [c.cmdline() for c in alive]
        said = output.read_text()
        assert "nothing is left running" in said and "Traceback" not in said, said[-3000:]
        assert said.endswith("nudge demo: stopped\n"), said[-500:]
    finally:
        if process.poll() is None:
            process.kill()


def test_a_bench_stopped_with_sigterm_stops_the_stack_it_started(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "bench", "--soak", "--minutes", "2", "--rate", "200", "--clients", "5"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 120
        while b"soak: 0:10" not in stderr.read_bytes() and time.monotonic() < deadline:  # producing, mid-run
            assert process.poll() is None, stderr.read_text()
            time.sleep(0.2)
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 4, [c.cmdline() for c in children]  # the broker, the worker, the gateway, the clients
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 130
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not [c for c in alive if c.status() != psutil.STATUS_ZOMBIE], [c.cmdline() for c in alive]
        said = stderr.read_text()
        assert said.endswith("nudge bench: stopped\n") and "Traceback" not in said, said[-2000:]
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["cluster", "--workers", "0"], "argument --workers: 0 is not at least 1"),
        (["faults", "--size", "many"], "argument --size: 'many' is not a whole number"),
        (["faults", "--only", "meteor-strike"], "unknown fault(s) meteor-strike; known: "),
        (["bench", "--soak", "--e2e"], "pass at most one of --decision, --e2e, --soak"),
        (["bench", "--partitions", "2"], "--partitions applies to --e2e, --soak and --broker only"),
        (["bench", "--broker", "--decision"], "pass at most one of --decision, --e2e, --soak, --broker"),
        (["bench", "--e2e", "--envelope-events", "5"], "--envelope-events applies to the throughput bench only"),
        (["bench", "--envelope-events", "0"], "argument --envelope-events: 0 is not at least 1"),
        (["simulate", "--users", "0"], "argument --users: 0 is not at least 1"),
        (["simulate", "--events", "-1"], "argument --events: -1 is not at least 1"),
        (["simulate", "--bad-share", "2"], "argument --bad-share: 2 is not a share from 0 to 1"),
        (["demo", "--rate", "nan"], "argument --rate: 'nan' is not a finite number"),
        (["replay", "--speed", "-1"], "argument --speed: -1 is negative"),
        (["bench", "--runs", "0"], "argument --runs: 0 is not at least 1"),
        (["bench", "--e2e", "--clients", "0"], "argument --clients: 0 is not at least 1"),
        (["bench", "--soak", "--minutes", "0"], "argument --minutes: 0 is not more than 0"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(arguments: list[str], reason: str) -> None:
    result = subprocess.run([sys.executable, "-m", "app.cli", *arguments], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert reason in result.stderr


async def test_worker_refuses_a_topic_with_another_partition_count(tmp_path: object) -> None:
    from app.devstack import REPO_ROOT, EmbeddedBroker, create_topic

    broker = EmbeddedBroker()
    broker.start()
    try:
        await create_topic(broker.bootstrap, "nudge.events", 3)
        env = {
            **os.environ,
            "KAFKA_BROKER_URL": f"kafka://{broker.bootstrap}",
            "NUDGE_WRITE_KEYS": "w",
            "NUDGE_API_KEYS": "a",
            "NUDGE_PARTITIONS": "8",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "NUDGE_SECRET": "a-test-secret-of-32-characters!!",
            "NUDGE_SEGMENTS_FILE": str(REPO_ROOT / "segments.yaml"),
            "NUDGE_CONTENT_FILE": str(REPO_ROOT / "content.yaml"),
            "NUDGE_TRIGGERS_FILE": str(REPO_ROOT / "triggers.yaml"),
        }
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "worker"], capture_output=True, text=True, timeout=60, env=env
        )
        assert result.returncode == 2
        assert "topic nudge.events has 3 partitions but NUDGE_PARTITIONS=8" in result.stderr
    finally:
        broker.stop()


def test_eval_reports_progressive_auc_on_the_real_data() -> None:
    """`nudge eval` streams REES46 and UCI through the intent model; on UCI it must beat the PageValues baseline."""
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "eval", "--json"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["rees46"]["scored"] > 10_000 and report["rees46"]["positives"] > 100
    assert report["uci"]["scored"] == 12_330 and report["uci"]["positives"] == 1_908
    assert 0.5 < report["uci"]["baseline_auc"] < report["uci"]["intent_auc"] <= 1.0
    # The goals of issue 3, reached by the live default model (measured: REES46 0.631 vs 0.580, UCI 0.900).
    assert report["rees46"]["intent_auc"] >= report["rees46"]["baseline_auc"] + 0.05
    assert report["uci"]["intent_auc"] >= 0.90


def test_the_throughput_benchmark_fills_envelopes_of_the_size_asked_for() -> None:
    # The worker's cost per event depends on how many events share an envelope: a bench that silently filled
    # 12-event envelopes instead of full ones halved the figure it reports (found in the sixth session).
    options = ["--events", "3000", "--users", "300", "--runs", "1", "--envelope-events", "50", "--json"]
    report = bench_report(options, timeout=240)
    assert report["events"] > 2_500 and 40 <= report["envelope_events"] <= 55
    assert report["events_per_s"] > 0 and report["baseline_events_per_s"] > 0
    assert report["ratio"] == round(report["events_per_s"] / report["baseline_events_per_s"], 2)


def test_the_decision_benchmark_answers_every_request_and_reports_percentiles() -> None:
    options = [
        "--decision",
        "--rate",
        "100",
        "--seconds",
        "1",
        "--runs",
        "1",
        "--users",
        "200",
        "--events",
        "2000",
        "--json",
    ]
    report = bench_report(options, timeout=180)
    assert report["decision"]["requests"] == 100 and report["decision"]["errors"] == 0
    assert 0 < report["decision"]["p50_ms"] <= report["decision"]["p99_ms"]
    assert report["baseline_health"]["requests"] == 100 and report["p99_ratio_to_health"] > 0


def test_the_e2e_benchmark_delivers_every_pop_up_once_on_the_partitions_asked_for() -> None:
    options = ["--e2e", "--clients", "20", "--rate", "40", "--seconds", "3", "--runs", "1", "--partitions", "2"]
    report = bench_report([*options, "--json"], timeout=300)
    assert report["partitions"] == 2 and report["connected"] == 20
    assert report["sent"] > 0 and report["delivered"] == report["sent"]
    assert report["missing"] == 0 and report["duplicates"] == 0
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["baseline"]["p99_ms"] > 0


def test_the_broker_benchmark_times_every_record_at_each_step() -> None:
    options = ["--broker", "--rate", "200", "--seconds", "1", "--batches", "400", "--runs", "1", "--partitions", "2"]
    steps = bench_report([*options, "--json"], timeout=120)["steps"]
    assert [(s["where"], s["held_batches"]) for s in steps] == [
        ("fresh", 0),
        ("same-topic", 100),
        ("same-topic", 400),
        ("other-topic", 400),
    ]
    for step in steps:
        assert step["unreceived"] == 0
        assert 0 < step["p50_ms"] <= step["p99_ms"] and step["broker_cpu_percent"] > 0
    assert steps[0]["p99_ratio"] == 1.0


def bench_report(options: list[str], *, timeout: float) -> dict[str, Any]:
    """Run ``nudge bench`` with ``options`` (including ``--json``); its JSON report."""
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", *options], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = orjson.loads(result.stdout)
    return report
