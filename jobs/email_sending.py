"""Task type `email_sending`: render subject and body templates and send them over SMTP.

`deliver` is the SMTP half and knows nothing of tasks, so the failure notifier
reuses it. Templates hold `{{ name }}` placeholders filled from `variables`;
nothing else in a template is evaluated.
"""

from __future__ import annotations

import json
import logging
import re
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from html import escape as escape_html
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import TaskInputError
from core.registry import task
from core.settings import Settings, get_settings

log = logging.getLogger(__name__)

MAX_ADDRESSES_PER_FIELD = 50
"""Most addresses accepted in each of to, cc and bcc."""

# Every character str.splitlines() breaks on, plus NUL. The email package refuses
# these in headers with a plain ValueError, which RQ would retry for nothing.
_HEADER_BREAKS = re.compile("[\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# ASCII only: a non-ASCII address needs SMTPUTF8, and a server without it would
# fail every retry the same way.
_ADDR_SPEC = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+")
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def address_problem(raw: str) -> str | None:
    """Return why `raw` is not one plausible `local@domain` address, or None if it is.

    A display name is allowed: "Ann <ann@example.com>".
    """
    if _HEADER_BREAKS.search(raw):
        return f"header injection: line break in address {raw!r}"
    _, addr = parseaddr(raw)
    stripped = raw.strip()
    # parseaddr quietly keeps the first of several addresses; insist it used the whole string.
    if not addr or not (stripped == addr or stripped.endswith(f"<{addr}>")):
        return f"not one email address: {raw!r}"
    if not _ADDR_SPEC.fullmatch(addr):
        return f"not a plausible local@domain address: {raw!r}"
    return None


def _parse_addresses(field: str, raws: Iterable[str]) -> list[Address]:
    addresses = []
    for raw in raws:
        problem = address_problem(raw)
        if problem:
            raise TaskInputError(f"{field}: {problem}")
        name, addr = parseaddr(raw)
        addresses.append(Address(display_name=name, addr_spec=addr))
    return addresses


def _refuse_line_breaks(field: str, value: str) -> None:
    if _HEADER_BREAKS.search(value):
        raise TaskInputError(f"header injection: {field} contains a line break")


def envelope_recipients(to: Iterable[str], cc: Iterable[str] = (), bcc: Iterable[str] = ()) -> list[str]:
    """Return the bare addresses the SMTP server is asked to deliver to, without duplicates."""
    unique: dict[str, str] = {}
    for field, raws in (("to", to), ("cc", cc), ("bcc", bcc)):
        for address in _parse_addresses(field, raws):
            unique.setdefault(address.addr_spec.lower(), address.addr_spec)
    return list(unique.values())


def deliver(
    settings: Settings,
    to: list[str],
    subject: str,
    text: str,
    html: str | None = None,
    cc: Iterable[str] = (),
    bcc: Iterable[str] = (),
    reply_to: str | None = None,
) -> str:
    """Send one email through the SMTP server in `settings` and return its Message-ID.

    With `html` the message is multipart/alternative (text, then HTML); with `html`
    and an empty `text`, it is HTML alone. Bcc addresses go in the envelope only.
    Raises TaskInputError on header injection, implausible addresses, or when the
    server refuses every recipient permanently (5xx). smtplib.SMTPException and
    OSError propagate unchanged, so the caller (RQ) can retry.
    """
    # cc and bcc may be one-shot iterables, and both are read twice below.
    cc, bcc = list(cc), list(bcc)
    to_addresses = _parse_addresses("to", to)
    if not to_addresses:
        raise TaskInputError("to: at least one recipient is required")
    cc_addresses = _parse_addresses("cc", cc)
    reply_to_addresses = _parse_addresses("reply_to", [reply_to] if reply_to is not None else [])
    _refuse_line_breaks("subject", subject)
    recipients = envelope_recipients(to, cc, bcc)

    sender = parseaddr(settings.smtp_from)[1]
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to_addresses
    if cc_addresses:
        message["Cc"] = cc_addresses
    if reply_to_addresses:
        message["Reply-To"] = reply_to_addresses
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    # An explicit domain: without one make_msgid asks DNS for this host's FQDN.
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    if html is None:
        message.set_content(text)
    elif text:
        message.set_content(text)
        message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")

    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
        try:
            refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            replies = exc.recipients.values()
            if replies and all(500 <= code < 600 for code, _ in replies):
                details = "; ".join(
                    f"{addr}: {code} {reply.decode(errors='replace')}" for addr, (code, reply) in exc.recipients.items()
                )
                raise TaskInputError(f"SMTP server refused every recipient permanently: {details}") from exc
            raise
    if refused:
        # The message went to the others; retrying would send it to them twice.
        log.warning(
            "SMTP server refused %d of %d recipients of %s: %s",
            len(refused),
            len(recipients),
            message["Message-ID"],
            refused,
        )
    return str(message["Message-ID"])


def render(template: str, variables: Mapping[str, Any], field: str, *, escape: bool = False) -> str:
    """Replace each `{{ name }}` in `template` with variables[name], HTML-escaped when `escape`.

    Strings are inserted as they are, other values as JSON. Substituted text is
    not scanned again. Raises TaskInputError naming every missing variable.
    """
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if not _VARIABLE_NAME.fullmatch(name):
            raise TaskInputError(f"{field}: placeholder {match.group(0)!r} is not a plain variable name")
        if name not in variables:
            missing.append(name)
            return ""
        value = variables[name]
        text = value if isinstance(value, str) else json.dumps(value)
        return escape_html(text) if escape else text

    rendered = _PLACEHOLDER.sub(substitute, template)
    if missing:
        raise TaskInputError(f"{field}: missing template variable(s): {', '.join(dict.fromkeys(missing))}")
    return rendered


class EmailParams(BaseModel):
    """Parameters of an `email_sending` task."""

    model_config = ConfigDict(extra="ignore", defer_build=True)  # built by its first use, not at every cold start

    to: list[str] = Field(min_length=1, max_length=MAX_ADDRESSES_PER_FIELD)
    cc: list[str] = Field(default_factory=list, max_length=MAX_ADDRESSES_PER_FIELD)
    bcc: list[str] = Field(default_factory=list, max_length=MAX_ADDRESSES_PER_FIELD)
    subject: str
    body: str | None = None
    html: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    reply_to: str | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _plausible_addresses(cls, value: list[str]) -> list[str]:
        for raw in value:
            problem = address_problem(raw)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("reply_to")
    @classmethod
    def _plausible_reply_to(cls, value: str | None) -> str | None:
        problem = address_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("subject")
    @classmethod
    def _one_line_subject(cls, value: str) -> str:
        if _HEADER_BREAKS.search(value):
            raise ValueError("header injection: subject contains a line break")
        return value

    @model_validator(mode="after")
    def _some_body(self) -> EmailParams:
        if self.body is None and self.html is None:
            raise ValueError("body is required unless html is given")
        return self


@task("email_sending", max_retries=5, timeout_s=60, params_model=EmailParams)
def send(params: EmailParams) -> dict[str, Any]:
    """Render the email's templates and send it over SMTP."""
    subject = render(params.subject, params.variables, "subject")
    text = render(params.body, params.variables, "body") if params.body is not None else ""
    html = render(params.html, params.variables, "html", escape=True) if params.html is not None else None
    message_id = deliver(
        get_settings(), params.to, subject, text, html, cc=params.cc, bcc=params.bcc, reply_to=params.reply_to
    )
    return {
        "sent": True,
        "message_id": message_id,
        "to": params.to,
        "subject": subject,
        "recipients": len(envelope_recipients(params.to, params.cc, params.bcc)),
    }
