"""The ``nudge`` command: ``worker``, ``gateway``, ``dev``, ``cluster``, ``demo``, ``simulate``, ``replay``, ``eval``,
``bench``, ``faults``.

Each subcommand has ``--help``. Settings come from the environment (see README); ``dev`` and ``demo`` start the
embedded stack and need none.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from app.settings import DEFAULT_COLLECTOR_LINGER_MS, DEFAULT_PARTITIONS

DEFAULT_UCI = (
    Path(__file__).resolve().parent.parent.parent / "shared/data/uci-online-shoppers/online_shoppers_intention.csv"
)
DEFAULT_REES46 = Path(__file__).resolve().parent.parent.parent / "shared/data/rees46-2019-oct-head/2019-Oct.csv"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # SIGTERM stops a command as Ctrl-C does, so that the stack a bench or the fault suite started is stopped with it
    # (by default SIGTERM ends the process at once and leaves broker, worker and gateway running). It raises SIGINT
    # rather than KeyboardInterrupt, so that asyncio.run's own Ctrl-C handling cancels the running tasks in order.
    # Commands that serve (dev, cluster, gateway, worker) install their own handler for both signals.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"nudge {args.command}: stopped", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nudge", description="Nudge: real-time personalization engine.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    worker = commands.add_parser("worker", help="run a stream worker (settings from the environment)")
    worker.set_defaults(run=_worker)

    gateway = commands.add_parser(
        "gateway", help="run a websocket gateway: browser sockets, pushes from nudge.messages (settings from the env)"
    )
    gateway.set_defaults(run=_gateway)

    dev = commands.add_parser(
        "dev", help="start the embedded broker, Redis and a worker; print one JSON ready line; run until Ctrl-C"
    )
    dev.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default 1)")
    dev.add_argument("--gateways", type=_positive_int, default=1, help="websocket gateway processes (default 1)")
    dev.set_defaults(run=_dev)

    cluster = commands.add_parser(
        "cluster",
        help="`nudge dev` scaled out: several workers splitting the partitions and several gateways",
        description="The embedded stack with --workers worker processes (the partitions are split between them; "
        "kill one and the others take its partitions) and --gateways websocket gateways (any gateway can hold any "
        "user's socket). Prints one JSON ready line with every node's URL; runs until Ctrl-C.",
    )
    cluster.add_argument("--workers", type=_positive_int, default=2, help="worker processes (default 2)")
    cluster.add_argument("--gateways", type=_positive_int, default=2, help="websocket gateway processes (default 2)")
    cluster.set_defaults(run=_dev)

    demo = commands.add_parser("demo", help="`nudge dev` plus simulated shoppers and a live summary")
    demo.add_argument("--rate", type=_positive_float, default=400, help="simulated events per second (default 400)")
    demo.add_argument("--users", type=_positive_int, default=2000, help="simulated shoppers (default 2000)")
    demo.add_argument("--bad-share", type=_share, default=0.01, help="share of malformed events (default 0.01)")
    demo.set_defaults(run=_demo)

    simulate = commands.add_parser("simulate", help="produce realistic simulated shoppers")
    _target_arguments(simulate)
    simulate.add_argument("--users", type=_positive_int, default=1000, help="number of shoppers (default 1000)")
    simulate.add_argument("--events", type=_positive_int, default=10_000, help="number of events (default 10000)")
    simulate.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    simulate.add_argument("--bad-share", type=_share, default=0.0, help="share of malformed events (default 0)")
    simulate.set_defaults(run=_simulate)

    replay = commands.add_parser("replay", help="stream the REES46 sample into the collector")
    _target_arguments(replay)
    replay.add_argument("--file", type=Path, default=DEFAULT_REES46, help="REES46 CSV (default: ../shared/data)")
    replay.add_argument(
        "--speed", type=_speed, default=0, help="times real time, e.g. 60 = an hour a minute (default 0: max)"
    )
    replay.add_argument("--limit", type=_positive_int, default=None, help="stop after this many events")
    replay.set_defaults(run=_replay)

    evaluate = commands.add_parser("eval", help="intent model quality on real data (progressive validation)")
    evaluate.add_argument("--rees46", type=Path, default=DEFAULT_REES46, help="REES46 CSV (default: ../shared/data)")
    evaluate.add_argument("--uci", type=Path, default=DEFAULT_UCI, help="UCI Online Shoppers CSV (default: ../shared)")
    evaluate.add_argument(
        "--horizon-s", type=_positive_int, default=300, help="purchase horizon in seconds (default 300)"
    )
    evaluate.add_argument(
        "--model", choices=["logistic", "forest"], default="logistic", help="intent model kind (default logistic)"
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    evaluate.set_defaults(run=_evaluate)

    bench = commands.add_parser(
        "bench",
        help="measure throughput against a plain Faust baseline, decision API latency (--decision), event-to-"
        "browser latency (--e2e), a long mixed load (--soak), or the embedded broker's floor (--broker)",
        description="Ingest throughput (default); with --decision, decision API latency at a fixed rate; with --e2e, "
        "event-to-browser latency through a worker and a websocket gateway at a fixed event rate.",
    )
    bench.add_argument("--decision", action="store_true", help="measure GET /v1/users/{id}/decision latency instead")
    bench.add_argument(
        "--e2e", action="store_true", help="measure event-to-browser latency through the worker and a gateway instead"
    )
    bench.add_argument(
        "--soak",
        action="store_true",
        help="hold a steady mixed load (events, pop-ups, decision reads) for --minutes; report every interval",
    )
    bench.add_argument(
        "--broker",
        action="store_true",
        help="measure one Kafka hop on the embedded broker as the partitions it reads fill with record batches",
    )
    bench.add_argument(
        "--batches",
        type=_positive_int,
        default=40_000,
        help="--broker: record batches held at the fullest step (default 40000)",
    )
    bench.add_argument("--minutes", type=_positive_float, default=10.0, help="--soak: minutes to run (default 10)")
    bench.add_argument("--plot", type=Path, default=Path("artifacts/soak.png"), help="--soak: PNG written at the end")
    bench.add_argument(
        "--clients", type=_positive_int, default=1000, help="--e2e, --soak: websocket clients (default 1000)"
    )
    bench.add_argument(
        "--events", type=_positive_int, default=None, help="events per run (default 100000; --decision 20000)"
    )
    bench.add_argument(
        "--users", type=_positive_int, default=None, help="distinct users (default 20000; --decision 2000)"
    )
    bench.add_argument("--runs", type=_positive_int, default=3, help="runs of each side; medians reported (default 3)")
    bench.add_argument(
        "--rate", type=_positive_float, default=500.0, help="requests/s, --e2e/--soak: events/s (default 500)"
    )
    bench.add_argument(
        "--seconds", type=_positive_float, default=10.0, help="--decision, --e2e: seconds per run (default 10)"
    )
    bench.add_argument(
        "--partitions",
        type=_positive_int,
        default=None,
        help=f"--e2e, --soak, --broker: partitions per topic of the embedded stack (default {DEFAULT_PARTITIONS})",
    )
    bench.add_argument(
        "--envelope-events",
        type=_positive_int,
        default=None,
        help="throughput: about this many events per batch envelope in the filled topic (default: what the "
        f"collector's {DEFAULT_COLLECTOR_LINGER_MS} ms linger packs for one of {DEFAULT_PARTITIONS} partitions at "
        "the goal's 20,000 events/s; 625 gives the fuller envelopes of a backlog)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    bench.set_defaults(run=_bench)

    faults = commands.add_parser(
        "faults",
        help="crash, restart and slow-client faults: the same stream with and without each, final states compared",
        description="For each fault, replay one deterministic event stream on a fresh embedded stack with and "
        "without the fault and compare the final state (profiles, model versions, decisions, delivered pop-ups). "
        "Progress on stderr, a JSON report on stdout; exits 1 if any fault lost, doubled or re-sent anything.",
    )
    faults.add_argument("--size", type=_positive_int, default=20_000, help="events per fault run (default 20000)")
    faults.add_argument("--only", nargs="+", metavar="FAULT", help="run only these faults (names as in the report)")
    faults.add_argument("--json", action="store_true", help="print the report as one JSON line")
    faults.set_defaults(run=_faults)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not more than 0")
    return value


def _speed(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative (0 means as fast as possible)")
    return value


def _share(text: str) -> float:
    value = _finite(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share from 0 to 1")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", help="collector base URL, e.g. http://127.0.0.1:6066")
    parser.add_argument("--write-key", default=os.environ.get("NUDGE_WRITE_KEY"), help="collector write key")
    parser.add_argument("--kafka", help="bootstrap servers: produce straight to the topic instead")
    parser.add_argument("--topic", default="nudge.events", help="topic for --kafka (default nudge.events)")
    parser.add_argument("--rate", type=float, default=0, help="events per second (default 0: as fast as possible)")


def _worker(args: argparse.Namespace) -> int:
    from app.rules import Rules
    from app.settings import Settings, SettingsError
    from app.topics import check_partitions

    try:
        settings = Settings.from_env(os.environ)
        # Refuse bad rule files before joining the group.
        Rules(settings.segments_file, settings.content_file, settings.triggers_file)
        asyncio.run(check_partitions(settings))
    except (SettingsError, ValueError, OSError) as error:
        print(f"nudge worker: {error}", file=sys.stderr)
        return 2
    from app.main import app

    # --quiet drops Faust's start-up banner, the one part of its output that is not a log record.
    quiet = ["--quiet"] if settings.log_format == "json" else []
    sys.argv = ["nudge", "-L", "uvloop", *quiet, "worker", "-l", settings.log_level]
    app.main()
    return 0


def _gateway(args: argparse.Namespace) -> int:
    import uvloop

    from app.logs import configure
    from app.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(os.environ, role="gateway")
    except SettingsError as error:
        print(f"nudge gateway: {error}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    from ws.server import Gateway

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await Gateway(settings).run(stop)

    uvloop.run(run())
    return 0


def _dev(args: argparse.Namespace) -> int:
    from app.devstack import DevStack

    async def run() -> None:
        async with DevStack(workers=args.workers, gateways=args.gateways) as stack:
            print(orjson.dumps(stack.ready_line()).decode(), flush=True)
            await _until_signalled()

    asyncio.run(run())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from app import demo

    asyncio.run(demo.run(rate=args.rate, users=args.users, bad_share=args.bad_share))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from app.simulate import simulate_events

    events = simulate_events(users=args.users, events=args.events, seed=args.seed, bad_share=args.bad_share)
    return _send(args, events, total=args.events, label="simulate")


def _replay(args: argparse.Namespace) -> int:
    from app.replay import rees46_events

    if not args.file.exists():
        print(f"nudge replay: {args.file} does not exist (pass --file)", file=sys.stderr)
        return 2
    events: Any = rees46_events(args.file)
    if args.limit is not None:
        events = (e for i, e in enumerate(events) if i < args.limit)
    return _send(args, events, total=args.limit, label="replay", speed=args.speed)


def _send(args: argparse.Namespace, events: Any, *, total: int | None, label: str, speed: float = 0) -> int:
    from app.sending import Progress, send_http, send_kafka

    progress = Progress(label, total=total)
    if args.kafka:
        asyncio.run(send_kafka(events, bootstrap=args.kafka, topic=args.topic, rate=args.rate, progress=progress))
    elif args.http and args.write_key:
        asyncio.run(
            send_http(events, url=args.http, write_key=args.write_key, rate=args.rate, progress=progress, speed=speed)
        )
    else:
        print(f"nudge {label}: pass --http URL --write-key KEY, or --kafka BOOTSTRAP", file=sys.stderr)
        return 2
    progress.finish()
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from app.evaluate import evaluate_rees46, evaluate_uci

    for path, flag in ((args.rees46, "--rees46"), (args.uci, "--uci")):
        if not path.exists():
            print(f"nudge eval: {path} does not exist (pass {flag})", file=sys.stderr)
            return 2
    result = {
        "model": args.model,
        "rees46": evaluate_rees46(args.rees46, horizon_ms=args.horizon_s * 1000, kind=args.model),
        "uci": evaluate_uci(args.uci, kind=args.model),
    }
    print(orjson.dumps(result, option=0 if args.json else orjson.OPT_INDENT_2).decode())
    return 0


def _bench(args: argparse.Namespace) -> int:
    if sum((args.e2e, args.decision, args.soak, args.broker)) > 1:
        print("nudge bench: pass at most one of --decision, --e2e, --soak, --broker", file=sys.stderr)
        return 2
    if args.partitions is not None and not (args.e2e or args.soak or args.broker):
        print("nudge bench: --partitions applies to --e2e, --soak and --broker only", file=sys.stderr)
        return 2
    if args.envelope_events is not None and (args.e2e or args.soak or args.broker or args.decision):
        print("nudge bench: --envelope-events applies to the throughput bench only", file=sys.stderr)
        return 2
    partitions = args.partitions or DEFAULT_PARTITIONS
    if args.broker:
        from app import bench_broker

        result = asyncio.run(
            bench_broker.run(
                rate=args.rate,
                seconds=args.seconds,
                batches=args.batches,
                partitions=partitions,
                runs=args.runs,
            )
        )
    elif args.soak:
        from app import bench_soak

        try:
            bench_soak.check_soak(minutes=args.minutes, rate=args.rate, clients=args.clients)
        except ValueError as error:
            print(f"nudge bench: {error}", file=sys.stderr)
            return 2
        result = asyncio.run(
            bench_soak.run(
                minutes=args.minutes,
                rate=args.rate,
                clients=args.clients,
                plot=args.plot,
                partitions=partitions,
            )
        )
    elif args.e2e:
        from app import bench_e2e

        result = asyncio.run(
            bench_e2e.run(
                clients=args.clients,
                rate=args.rate,
                seconds=args.seconds,
                runs=args.runs,
                partitions=partitions,
            )
        )
    elif args.decision:
        from app import bench_decision

        result = asyncio.run(
            bench_decision.run(
                rate=args.rate,
                seconds=args.seconds,
                runs=args.runs,
                users=args.users or 2_000,
                events=args.events or 20_000,
            )
        )
    else:
        from app import bench

        result = asyncio.run(
            bench.run(
                events=args.events or 100_000,
                users=args.users or 20_000,
                runs=args.runs,
                envelope_events=args.envelope_events or bench.ENVELOPE_EVENTS,
            )
        )
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


def _faults(args: argparse.Namespace) -> int:
    from app import faults

    try:
        report = asyncio.run(faults.run(size=args.size, only=args.only))
    except ValueError as error:
        print(f"nudge faults: {error}", file=sys.stderr)
        return 2
    print(orjson.dumps(report, option=0 if args.json else orjson.OPT_INDENT_2).decode())
    return 0 if report["ok"] else 1


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)


if __name__ == "__main__":
    sys.exit(main())
