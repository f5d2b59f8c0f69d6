"""Pages people see: sign-in, the account and admin pages (server-rendered, CSRF-protected
forms). Each page module owns its blueprint; this one serves the templates and static files
they all use."""

from flask import Blueprint

from .security import protect_pages

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")
bp.after_request(protect_pages)
