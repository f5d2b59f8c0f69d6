"""Pages people see: sign-in, consent, sign-out (server-rendered, CSRF-protected forms)."""

from flask import Blueprint

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")

from . import account, admin, authorize, login  # noqa: E402, F401  (routes register on bp)
