"""The operator CLI: projects and keys, on the database in SIMWIRE_DATABASE_URL."""

from __future__ import annotations

import asyncio
import json
import re

import click
from click.testing import CliRunner

from app.cli import main
from tests.conftest import TEST_SECRET_KEY

KEY_RE = re.compile(r"sw_live_[0-9a-f]{32}")


def run(database_url: str, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={"SIMWIRE_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    return result.output


def test_project_create_list_and_key_lifecycle(database_url):
    created = json.loads(run(database_url, "project", "create", "shop", "--org", "acme", "--json"))
    project_id, first_key = created["project_id"], created["key"]
    assert KEY_RE.fullmatch(first_key)
    assert project_id in run(database_url, "project", "list")

    second = run(database_url, "project", "create", "blog", "--org", "acme", "--json")
    assert json.loads(second)["organization_id"] == created["organization_id"]

    issued = run(
        database_url, "key", "create", project_id, "--name", "ci", "--scope", "messages.read"
    )
    new_key = KEY_RE.search(issued).group(0)
    key_id = re.search(r"key id: (key_\w+)", issued).group(1)
    listing = run(database_url, "key", "list", project_id)
    assert key_id in listing and "messages.read" in listing
    assert first_key not in listing and new_key not in listing

    rotated = run(database_url, "key", "rotate", project_id, key_id)
    assert KEY_RE.search(rotated).group(0) != new_key
    assert f"{key_id}\t{new_key[:16]}…\trevoked" in run(database_url, "key", "list", project_id)

    run(database_url, "key", "revoke", project_id, created["key_id"])
    assert "\trevoked\t" in run(database_url, "key", "list", project_id)


def test_unknown_project_is_a_clear_error(database_url):
    result = CliRunner().invoke(
        main, ["key", "create", "prj_missing"], env={"SIMWIRE_DATABASE_URL": database_url}
    )
    assert result.exit_code != 0
    assert "not_found" in result.output


# Options some commands need before they touch the database; every other required argument or
# option gets "1", which each command accepts as a value.
_EXTRA_ARGS = {"send": ["--to", "+14155550100", "--message", "hi"]}
# Commands that do not read the server's database: `phone` talks to a server, `migrate` creates
# the database (tested on its own below).
_NO_DATABASE = {"phone", "migrate"}


def _database_commands(group: click.Group = main, prefix: tuple[str, ...] = ()):
    """Every leaf command of the CLI that reads the database, with arguments that reach it."""
    for name, command in sorted(group.commands.items()):
        if not prefix and name in _NO_DATABASE:
            continue
        if isinstance(command, click.Group):
            yield from _database_commands(command, (*prefix, name))
            continue
        args = [*prefix, name]
        for param in command.params:
            if isinstance(param, click.Argument):
                args.append("1")
            elif param.required:
                args += [param.opts[0], "1"]
        yield [*args, *_EXTRA_ARGS.get(name, [])]


def _refusals(database_url: str) -> dict[str, str]:
    outputs = {}
    for args in _database_commands():
        result = CliRunner().invoke(main, args, env={"SIMWIRE_DATABASE_URL": database_url})
        assert result.exit_code == 1, (args, result.output, result.exception)
        outputs[" ".join(args)] = result.output
    return outputs


def test_every_command_against_a_missing_database_says_so_in_one_line_and_creates_nothing(
    tmp_path,
):
    path = tmp_path / "missing.db"
    outputs = _refusals(f"sqlite+aiosqlite:///{path}")
    assert len(outputs) >= 15  # the walk found the commands
    for command, output in outputs.items():
        assert output.count("\n") == 1, (command, output)
        assert output.startswith(f"Error: no database at {path} "), (command, output)
        assert "`simwire migrate`" in output and "SIMWIRE_DATABASE_URL" in output
    downgrade = CliRunner().invoke(
        main,
        ["migrate", "--downgrade-to", "base"],
        env={"SIMWIRE_DATABASE_URL": f"sqlite:///{path}"},
    )
    assert downgrade.exit_code == 1 and downgrade.output.startswith("Error: no database at")
    assert list(tmp_path.iterdir()) == []


def test_every_command_against_an_unmigrated_database_says_so_in_one_line(database_url):
    run(database_url, "migrate", "--downgrade-to", "0007")
    for command, output in _refusals(database_url).items():
        assert output.count("\n") == 1, (command, output)
        assert "is at schema revision 0007, this Simwire needs" in output, (command, output)
    run(database_url, "migrate", "--downgrade-to", "base")
    for command, output in _refusals(database_url).items():
        assert output.count("\n") == 1, (command, output)
        assert "has no Simwire schema yet: run `simwire migrate`" in output, (command, output)
    run(database_url, "migrate")
    assert run(database_url, "project", "list") == ""


def test_an_empty_database_file_is_reported_as_unmigrated(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    for command, output in _refusals(f"sqlite+aiosqlite:///{path}").items():
        assert output.count("\n") == 1, (command, output)
        assert "has no Simwire schema yet: run `simwire migrate`" in output, (command, output)


def test_an_unreachable_database_is_one_line_without_the_password():
    url = "postgresql+asyncpg://simwire:hunter2@127.0.0.1:9/simwire"
    for args in (["project", "list"], ["migrate"]):
        result = CliRunner().invoke(main, args, env={"SIMWIRE_DATABASE_URL": url})
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "127.0.0.1:9" in result.output and "hunter2" not in result.output
        assert "SIMWIRE_DATABASE_URL" in result.output


def test_webhook_add_list_and_remove(database_url):
    env = {
        "SIMWIRE_DATABASE_URL": database_url,
        "SIMWIRE_SECRET_KEY": TEST_SECRET_KEY,
        "SIMWIRE_WEBHOOK_ALLOW_PRIVATE": "true",
    }

    def webhook(*args: str) -> click.testing.Result:
        return CliRunner().invoke(main, ["webhook", *args], env=env)

    project_id = json.loads(run(database_url, "project", "create", "shop", "--json"))["project_id"]
    added = webhook("add", project_id, "http://127.0.0.1:9/a", "--event", "message.sent", "--json")
    assert added.exit_code == 0, added.output
    first = json.loads(added.output)
    assert first["secret"].startswith("whsec_") and first["events"] == ["message.sent"]
    second = webhook("add", project_id, "http://127.0.0.1:9/b", "--description", "all")
    assert second.exit_code == 0 and "secret:  whsec_" in second.output

    listing = webhook("list", project_id).output.splitlines()
    assert listing[0] == f"{first['id']}\tenabled\thttp://127.0.0.1:9/a\tmessage.sent"
    assert len(listing) == 2 and first["secret"] not in "".join(listing)

    assert webhook("remove", project_id, first["id"]).output == f"removed {first['id']}\n"
    assert webhook("remove", project_id, "--all").output == "removed 1 webhook(s)\n"
    assert webhook("list", project_id).output == ""

    unknown = webhook("add", project_id, "http://127.0.0.1:9/a", "--event", "message.lost")
    assert unknown.exit_code == 1 and "unknown_event_type" in unknown.output
    assert "message.lost" in unknown.output
    refused = CliRunner().invoke(
        main,
        ["webhook", "add", project_id, "https://10.0.0.1/hook"],
        env={**env, "SIMWIRE_WEBHOOK_ALLOW_PRIVATE": "false"},
    )
    assert refused.exit_code == 1 and "webhook_url_not_allowed" in refused.output
    missing = webhook("remove", project_id, "wh_missing")
    assert missing.exit_code == 1 and "not_found" in missing.output
    neither = webhook("remove", project_id)
    assert neither.exit_code == 2 and "either WEBHOOK_ID or --all" in neither.output
    other = json.loads(run(database_url, "project", "create", "blog", "--json"))["project_id"]
    kept = json.loads(webhook("add", project_id, "http://127.0.0.1:9/c", "--json").output)
    assert webhook("remove", other, kept["id"]).exit_code == 1  # another project's: not found
    assert kept["id"] in webhook("list", project_id).output


async def test_invite_create_prints_a_single_use_code_for_registering(database_url, client):
    # The CLI runs its own event loop: off this test's loop.
    into_org = json.loads(
        await asyncio.to_thread(
            run, database_url, "invite", "create", "--org", "acme", "--role", "admin", "--json"
        )
    )
    assert into_org["invite_code"].startswith("sw_inv_") and into_org["role"] == "admin"
    own = await asyncio.to_thread(run, database_url, "invite", "create")
    code = re.search(r"invite code: (sw_inv_[0-9a-f]{32})", own).group(1)
    assert "a new organization of their own as owner" in own

    body = {"email": "cli@example.com", "password": "violet-harbour-42-lanterns", "name": "Cli"}
    first = await client.post("/v1/auth/register", json={**body, "invite_code": code})
    assert first.status_code == 201, first.text
    again = await client.post(
        "/v1/auth/register", json={**body, "email": "cli2@example.com", "invite_code": code}
    )
    assert again.status_code == 422 and again.json()["error"] == "invalid_invite"
    admin = await client.post(
        "/v1/auth/register",
        json={**body, "email": "cli3@example.com", "invite_code": into_org["invite_code"]},
    )
    assert admin.status_code == 201

    refused = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["invite", "create", "--role", "member"],
        env={"SIMWIRE_DATABASE_URL": database_url},
    )
    assert refused.exit_code == 1 and "--org" in refused.output
