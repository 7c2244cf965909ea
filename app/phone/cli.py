"""`simwire phone`: run the reference phone client from a terminal (or Termux on the phone)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import click

from app.phone.client import DeviceTokenRejected, PhoneClient, default_device_info
from app.phone.radios import Radio
from app.phone.radios.fake import FakeRadio, fake_sims
from app.phone.radios.termux import TermuxRadio, android_device_info

# Exit status when the server refused the token: a supervisor should not restart in a loop.
EXIT_TOKEN_REJECTED = 3


def _parse_sim_numbers(values: tuple[str, ...]) -> dict[int, str]:
    numbers: dict[int, str] = {}
    for value in values:
        slot, sep, number = value.partition("=")
        if not sep or not slot.strip().isdigit() or not number.strip():
            raise click.BadParameter(
                f"expected SLOT=NUMBER, got {value!r}", param_hint="--sim-number"
            )
        numbers[int(slot)] = number.strip()
    return numbers


@click.command("phone")
@click.option(
    "--server", required=True, help="Hub address: http(s)://host:port or ws(s)://host:port."
)
@click.option(
    "--token",
    envvar="SIMWIRE_DEVICE_TOKEN",
    required=True,
    show_envvar=True,
    help="Device token (sw_dev_…). Prefer the environment variable: arguments show up in `ps`.",
)
@click.option(
    "--radio",
    "radio_kind",
    type=click.Choice(["fake", "termux"]),
    default="fake",
    show_default=True,
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False),
    default="~/.simwire-phone.db",
    show_default=True,
    help="SQLite file holding the outbox and inbox across restarts.",
)
@click.option("--heartbeat-s", type=click.FloatRange(min=1), default=30.0, show_default=True)
@click.option("--fake-latency-ms", type=click.FloatRange(min=0), default=200.0, show_default=True)
@click.option("--fake-failure-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--fake-delivery-rate", type=click.FloatRange(0, 1), default=1.0, show_default=True)
@click.option(
    "--fake-delivery-delay-ms", type=click.FloatRange(min=0), default=1000.0, show_default=True
)
@click.option("--fake-seed", type=int, default=None, help="Make the fake radio's draws repeatable.")
@click.option(
    "--sims",
    "sim_count",
    type=click.IntRange(1, 8),
    default=1,
    show_default=True,
    help="Fake radio: number of SIMs.",
)
@click.option(
    "--sim-number",
    "sim_numbers",
    multiple=True,
    metavar="SLOT=NUMBER",
    help="Termux radio: the SIM's own number, which Android rarely reveals (repeatable).",
)
@click.option(
    "--poll-s",
    type=click.FloatRange(min=0.5),
    default=5.0,
    show_default=True,
    help="Termux radio: inbox poll interval.",
)
@click.option(
    "--retry-on-auth-failure",
    is_flag=True,
    help="Keep retrying when the server rejects the token instead of exiting.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def phone_command(
    server: str,
    token: str,
    radio_kind: str,
    store_path: str,
    heartbeat_s: float,
    fake_latency_ms: float,
    fake_failure_rate: float,
    fake_delivery_rate: float,
    fake_delivery_delay_ms: float,
    fake_seed: int | None,
    sim_count: int,
    sim_numbers: tuple[str, ...],
    poll_s: float,
    retry_on_auth_failure: bool,
    log_level: str,
) -> None:
    """Connect this machine (or Android phone) to a Simwire hub as a phone."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    numbers = _parse_sim_numbers(sim_numbers)
    try:
        asyncio.run(
            _serve(
                server=server,
                token=token.strip(),
                radio_kind=radio_kind,
                store_path=store_path,
                heartbeat_s=heartbeat_s,
                fake=dict(
                    latency_ms=fake_latency_ms,
                    failure_rate=fake_failure_rate,
                    delivery_rate=fake_delivery_rate,
                    delivery_delay_ms=fake_delivery_delay_ms,
                    seed=fake_seed,
                    sims=fake_sims(sim_count),
                ),
                sim_numbers=numbers,
                poll_s=poll_s,
                stop_on_auth_failure=not retry_on_auth_failure,
            )
        )
    except DeviceTokenRejected as exc:
        click.echo(f"simwire phone: {exc}", err=True)
        sys.exit(EXIT_TOKEN_REJECTED)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


async def _serve(
    *,
    server: str,
    token: str,
    radio_kind: str,
    store_path: str,
    heartbeat_s: float,
    fake: dict,
    sim_numbers: dict[int, str],
    poll_s: float,
    stop_on_auth_failure: bool,
) -> None:
    device_info = default_device_info()
    radio: Radio
    if radio_kind == "termux":
        radio = TermuxRadio(poll_s=poll_s, sim_numbers=sim_numbers)
        device_info = await android_device_info(device_info["app_version"])
    else:
        radio = FakeRadio(**fake)
    client = PhoneClient(
        server,
        token,
        radio,
        store_path,
        heartbeat_s=heartbeat_s,
        device_info=device_info,
        stop_on_auth_failure=stop_on_auth_failure,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, lambda: asyncio.ensure_future(client.stop()))
    logging.getLogger("simwire.phone").info(
        "phone client for %s (radio: %s)", client.url, radio_kind
    )
    await client.run()


if __name__ == "__main__":  # `python -m app.phone.cli`: runs without the server's dependencies
    phone_command()
