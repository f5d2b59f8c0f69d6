"""Fixtures of the tests that drive the app in process: its CLI through click's runner, and
the authorization-code tests' person with a browser and third-party SPA."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo

from authserver.cli import cli
from tests.support.authorize import LOGOUT_RETURN, REDIRECT
from tests.support.oauth import BrowserActions


@pytest.fixture
def run(app: Flask) -> Callable[..., Result]:
    """``authserver ARGS`` against the test app, in this process (stdin from ``input``)."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, list(args), input=input,
                             obj=ScriptInfo(create_app=lambda: app))

    return invoke


@pytest.fixture
def person(app: Flask) -> BrowserActions:
    """Someone with a browser (cookies kept), played by the Flask test client."""
    return BrowserActions(app.test_client())


@pytest.fixture
def spa(oauth):
    """A public third-party client (an SPA) allowed OIDC scopes and refresh tokens."""
    oauth.create_user()
    record, _ = oauth.create_client(
        name="Budget Planner", public=True, redirect_uris=[REDIRECT],
        post_logout_redirect_uris=[LOGOUT_RETURN],
        scope="openid profile email offline_access read",
    )
    return record
