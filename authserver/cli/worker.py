"""``authserver worker``: the Back-Channel Logout worker on its own (docs/design.md,
"Revocation that reaches APIs"), for deployments that set ``AUTHSERVER_BACKCHANNEL_WORKER=
false`` on their ``serve`` processes, or want more delivery capacity. Any number of them
may run beside each other and beside ``serve``: a message is claimed by one at a time."""

from __future__ import annotations

import signal
from types import FrameType

import click
from flask.cli import with_appcontext

from ..backchannel.worker import LogoutWorker
from ..domain import logout_outbox
from ..extensions import db
from ..services import services


@click.command("worker")
@click.option("--once", is_flag=True,
              help="Deliver what is due now, print what became of it, and exit.")
@with_appcontext
def worker(once: bool) -> None:
    """Deliver Back-Channel Logout tokens from the outbox (until SIGTERM or Ctrl-C)."""
    svc = services()
    svc.keys.active()  # no signing key: one clear line now, not a failure per message
    runner = LogoutWorker(db.engine, svc.settings, svc.keys, clock=svc.clock)
    if once:
        tally = runner.run_once()
        left = logout_outbox.counts(db.engine)
        click.echo(f"delivered {tally['delivered']}, to retry {tally['retry']}, given up "
                   f"{tally['given_up']}; pending now {left['pending']}")
        return

    def stop(_signum: int, _frame: FrameType | None) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"authserver: back-channel logout worker {runner.name} running", err=True)
    runner.run_forever()
    click.echo("authserver: back-channel logout worker stopped", err=True)
