"""`python -m app.keys`: create prints a key once, list never shows one, revoke takes an id or a name."""

from __future__ import annotations

import re

from app import keys
from core.storage import apikeys


def run(capsys, fake_redis, *argv: str) -> tuple[int, str, str]:
    code = keys.main(list(argv), connection=fake_redis)
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_use_and_revoke(capsys, fake_redis, app):
    code, out, _ = run(capsys, fake_redis, "create", "--name", "ci", "--scopes", "submit,read")
    assert code == 0
    [key] = re.findall(r"^(tr_\S+)$", out, re.MULTILINE)
    assert len(key) == len(apikeys.KEY_PREFIX) + 43

    code, out, _ = run(capsys, fake_redis, "list")
    assert code == 0 and key not in out
    [line] = [row for row in out.splitlines() if " ci " in row]
    key_id = apikeys.digest(key)[: apikeys.ID_CHARS]
    assert line.split()[:3] == [key_id, "ci", "read,submit"] and line.endswith("never")

    client = app.test_client()
    client.api_key = key
    assert client.get("/api/tasks").status_code == 200
    _, out, _ = run(capsys, fake_redis, "list")
    assert not next(row for row in out.splitlines() if " ci " in row).endswith("never")

    code, out, _ = run(capsys, fake_redis, "revoke", key_id)
    assert code == 0 and out.strip() == f"revoked ci ({key_id})"
    assert "ci" not in run(capsys, fake_redis, "list")[1]


def test_revoke_by_name_and_errors_say_what_to_do(capsys, fake_redis):
    run(capsys, fake_redis, "create", "--name", "ops", "--scopes", "admin")
    assert run(capsys, fake_redis, "revoke", "ops")[0] == 0
    code, _, err = run(capsys, fake_redis, "revoke", "ops")
    assert code == 2 and "no key has the id or name 'ops'" in err
    code, _, err = run(capsys, fake_redis, "create", "--name", "x", "--scopes", "write")
    assert code == 2 and "allowed: read, submit, admin" in err
    assert apikeys.list_keys(fake_redis) == []
