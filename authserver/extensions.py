"""Flask extensions, bound to the app in ``create_app`` (nothing runs at import)."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from .storage.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
