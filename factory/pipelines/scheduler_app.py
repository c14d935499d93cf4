"""The scheduler's Celery app, built from the settings when ``celery -A`` imports it (``factory scheduler``)."""

from factory import logs
from factory.config import get_settings
from factory.pipelines.beat import make_app

settings = get_settings()
logs.install(settings)
app = make_app(settings)
