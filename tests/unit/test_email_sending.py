"""The email_sending task and `deliver`, against a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import smtplib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core import registry
from core.errors import TaskInputError
from core.settings import Settings
from jobs import email_sending
from tests.smtp_server import SmtpServer, free_port, smtp_server  # noqa: F401

# The imported fixture is requested by naming it as an argument, which pyflakes reads as a redefinition.
# ruff: noqa: F811

ROOT = Path(__file__).resolve().parents[2]


def settings_for(host: str, port: int) -> Settings:
    return Settings.from_env({"SMTP_HOST": host, "SMTP_PORT": str(port), "SMTP_FROM": "Relay <relay@example.com>"})


@pytest.fixture
def run_task(smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Return a function that runs the task the way the worker does: parse parameters, then call."""
    settings = settings_for(smtp_server.host, smtp_server.port)
    monkeypatch.setattr(email_sending, "get_settings", lambda: settings)
    task_type = registry.get("email_sending")

    def run(parameters: dict[str, Any]) -> Any:
        return task_type.func(task_type.parse_params(parameters))

    return run


def test_task_type_is_registered_with_its_retries_and_timeout() -> None:
    task_type = registry.get("email_sending")
    assert task_type.func is email_sending.send
    assert (task_type.max_retries, task_type.timeout_s) == (5, 60)


def test_plain_text_email_arrives_rendered_to_every_recipient(run_task: Any, smtp_server: SmtpServer) -> None:
    result = run_task(
        {
            "to": ["Ann <ann@example.com>", "bob@example.com"],
            "cc": ["carol@example.com"],
            "bcc": ["dave@example.com"],
            "subject": "Hello {{ name }}",
            "body": "Dear {{name}},\nyour order {{ order }} shipped.\n",
            "variables": {"name": "Ann", "order": 42},
            "reply_to": "support@example.com",
            "priority": "ignored extra key",
        }
    )

    [received] = smtp_server.messages
    assert received.mail_from == "relay@example.com"
    assert received.rcpt_tos == ["ann@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]
    message = received.message
    assert message["Subject"] == "Hello Ann"
    assert message["To"] == "Ann <ann@example.com>, bob@example.com"
    assert message["Cc"] == "carol@example.com"
    assert message["Bcc"] is None
    assert message["Reply-To"] == "support@example.com"
    assert message["From"] == "Relay <relay@example.com>"
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "Dear Ann,\nyour order 42 shipped.\n"
    assert result == {
        "sent": True,
        "message_id": message["Message-ID"],
        "to": ["Ann <ann@example.com>", "bob@example.com"],
        "subject": "Hello Ann",
        "recipients": 4,
    }


def test_to_may_be_a_single_string(run_task: Any, smtp_server: SmtpServer) -> None:
    result = run_task({"to": "ann@example.com", "subject": "Hi", "body": "Hello"})

    assert smtp_server.messages[0].rcpt_tos == ["ann@example.com"]
    assert result["to"] == ["ann@example.com"]


def test_html_and_text_arrive_as_alternatives_with_variables_escaped_in_html_only(
    run_task: Any, smtp_server: SmtpServer
) -> None:
    run_task(
        {
            "to": ["ann@example.com"],
            "subject": "Report for {{ who }}",
            "body": "Hi {{ who }}",
            "html": "<p>Hi {{ who }}</p>",
            "variables": {"who": '<b>Tom & "Jerry"</b>'},
        }
    )

    message = smtp_server.messages[0].message
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Subject"] == 'Report for <b>Tom & "Jerry"</b>'
    assert message.get_body(("plain",)).get_content().strip() == 'Hi <b>Tom & "Jerry"</b>'
    html = message.get_body(("html",)).get_content()
    assert html.strip() == "<p>Hi &lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;</p>"


def test_html_without_body_sends_html_alone(run_task: Any, smtp_server: SmtpServer) -> None:
    run_task({"to": ["ann@example.com"], "subject": "Hi", "html": "<p>Hello</p>"})

    message = smtp_server.messages[0].message
    assert message.get_content_type() == "text/html"
    assert message.get_content().strip() == "<p>Hello</p>"


def test_substituted_values_are_not_rendered_again(run_task: Any, smtp_server: SmtpServer) -> None:
    run_task({"to": ["ann@example.com"], "subject": "{{ a }}", "body": "x", "variables": {"a": "{{ b }}", "b": "no"}})

    assert smtp_server.messages[0].message["Subject"] == "{{ b }}"


@pytest.mark.parametrize(
    "parameters",
    [
        {"to": ["ann@example.com\r\nBcc: victim@example.com"]},
        {"to": ["ann@example.com\nBcc: victim@example.com"]},
        {"cc": ["ann@example.com\rX: y"]},
        {"reply_to": "ann@example.com\r\nBcc: victim@example.com"},
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"subject": "Hi\u2028there"},
        {"subject": "Hi {{ name }}", "variables": {"name": "x\r\nBcc: victim@example.com"}},
        {"subject": "Hi {{ name }}", "variables": {"name": "x\nBcc: victim@example.com"}},
    ],
    ids=[
        "to-crlf",
        "to-lf",
        "cc-cr",
        "reply-to",
        "subject-template",
        "subject-u2028",
        "subject-var-crlf",
        "subject-var-lf",
    ],
)
def test_line_breaks_in_headers_are_refused_and_nothing_is_sent(
    run_task: Any, smtp_server: SmtpServer, parameters: dict[str, Any]
) -> None:
    with pytest.raises(TaskInputError, match="header injection"):
        run_task({"to": ["ann@example.com"], "subject": "Hi", "body": "Hello", **parameters})

    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("to", ["ann@example.com\r\nBcc: x@example.com"]), ("subject", "Hi\nBcc: x@example.com")],
)
def test_deliver_refuses_line_breaks_itself(smtp_server: SmtpServer, field: str, value: Any) -> None:
    arguments: dict[str, Any] = {"to": ["ann@example.com"], "subject": "Hi", "text": "Hello", field: value}

    with pytest.raises(TaskInputError, match="header injection"):
        email_sending.deliver(settings_for(smtp_server.host, smtp_server.port), **arguments)

    assert smtp_server.messages == []


def test_deliver_returns_the_message_id_the_server_received(smtp_server: SmtpServer) -> None:
    settings = settings_for(smtp_server.host, smtp_server.port)

    message_id = email_sending.deliver(settings, ["ann@example.com"], "Task failed", "details", bcc=["ops@example.com"])

    [received] = smtp_server.messages
    assert received.message["Message-ID"] == message_id
    assert message_id.endswith("@example.com>")
    assert received.rcpt_tos == ["ann@example.com", "ops@example.com"]
    assert received.message.get_content() == "details\n"


def test_missing_variables_are_refused_by_name(run_task: Any, smtp_server: SmtpServer) -> None:
    with pytest.raises(TaskInputError, match=r"body: missing template variable\(s\): order, total"):
        run_task(
            {
                "to": ["ann@example.com"],
                "subject": "Hi {{ name }}",
                "body": "{{ order }} {{total}}",
                "variables": {"name": "A"},
            }
        )

    assert smtp_server.messages == []


def test_placeholders_allow_no_expressions(run_task: Any, smtp_server: SmtpServer) -> None:
    with pytest.raises(TaskInputError, match="not a plain variable name"):
        run_task(
            {"to": ["ann@example.com"], "subject": "Hi", "body": "{{ user.__class__ }}", "variables": {"user": "x"}}
        )

    assert smtp_server.messages == []


@pytest.mark.parametrize(
    "address",
    [
        "not-an-address",
        "ann@",
        "@example.com",
        "ann@example.com, bob@example.com",
        "ann@exa mple.com",
        "Ann <ann@example.com",
    ],
)
def test_implausible_addresses_are_refused(run_task: Any, smtp_server: SmtpServer, address: str) -> None:
    with pytest.raises(TaskInputError, match="to"):
        run_task({"to": [address], "subject": "Hi", "body": "Hello"})
    with pytest.raises(TaskInputError):
        email_sending.deliver(settings_for(smtp_server.host, smtp_server.port), [address], "Hi", "Hello")

    assert smtp_server.messages == []


@pytest.mark.parametrize(
    "parameters",
    [
        {"to": []},
        {"to": [f"user{i}@example.com" for i in range(51)]},
        {"subject": None},
        {"body": None},
    ],
    ids=["no-recipient", "too-many", "no-subject", "no-body-nor-html"],
)
def test_malformed_parameters_are_refused(run_task: Any, smtp_server: SmtpServer, parameters: dict[str, Any]) -> None:
    base = {"to": ["ann@example.com"], "subject": "Hi", "body": "Hello"}
    bad = {key: value for key, value in {**base, **parameters}.items() if value is not None}

    with pytest.raises(TaskInputError):
        run_task(bad)

    assert smtp_server.messages == []


def test_permanent_refusal_of_every_recipient_is_not_retried(run_task: Any, smtp_server: SmtpServer) -> None:
    smtp_server.refuse["ann@example.com"] = "550 5.1.1 No such user"

    with pytest.raises(TaskInputError, match="refused every recipient permanently"):
        run_task({"to": ["ann@example.com"], "subject": "Hi", "body": "Hello"})

    assert smtp_server.messages == []


def test_temporary_refusal_propagates_so_rq_retries(run_task: Any, smtp_server: SmtpServer) -> None:
    smtp_server.refuse["ann@example.com"] = "450 4.2.1 Mailbox busy"

    with pytest.raises(smtplib.SMTPRecipientsRefused):
        run_task({"to": ["ann@example.com"], "subject": "Hi", "body": "Hello"})


def test_partial_refusal_still_sends_to_the_others(run_task: Any, smtp_server: SmtpServer) -> None:
    smtp_server.refuse["gone@example.com"] = "550 5.1.1 No such user"

    result = run_task({"to": ["ann@example.com", "gone@example.com"], "subject": "Hi", "body": "Hello"})

    assert smtp_server.messages[0].rcpt_tos == ["ann@example.com"]
    assert result["sent"] is True


def test_unreachable_server_raises_a_transport_error_so_rq_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for("127.0.0.1", free_port())
    monkeypatch.setattr(email_sending, "get_settings", lambda: settings)
    task_type = registry.get("email_sending")

    with pytest.raises((OSError, smtplib.SMTPException)) as caught:
        task_type.func(task_type.parse_params({"to": ["ann@example.com"], "subject": "Hi", "body": "Hello"}))

    assert not isinstance(caught.value, TaskInputError)


def test_module_imports_no_transport_or_web_framework() -> None:
    code = "import sys, jobs.email_sending; print(sorted({'flask', 'pika', 'redis'} & set(sys.modules)))"

    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    assert output.strip() == "[]"
