"""core.settings: what a repr of the settings may show (nothing secret, so a log line or a traceback leaks none)."""

from __future__ import annotations

from core.settings import Settings

SECRETS = {
    "REDIS_URL": "redis://:redis-secret@cache.internal:6379/0",
    "RABBITMQ_URL": "amqp://user:rabbit-secret@mq.internal:5672/%2F",
    "SMTP_PASSWORD": "smtp-secret",
    "FAILURE_WEBHOOK_URL": "https://hooks.example.com/services/webhook-secret",
    "FAILURE_WEBHOOK_SECRET": "signing-secret",
    "DASHBOARD_PASSWORD": "dashboard-secret",
    "TASKRELAY_BOOTSTRAP_KEY": "tr_bootstrap-secret-0000000000000000000000000",
}


def test_a_repr_of_the_settings_shows_no_secret():
    settings = Settings.from_env(SECRETS)
    assert settings.redis_url == SECRETS["REDIS_URL"] and settings.smtp_password == "smtp-secret"  # all were read
    shown = repr(settings)
    assert "Settings(" in shown
    assert [name for name, secret in SECRETS.items() if secret in shown] == []
