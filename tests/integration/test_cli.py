"""The operator CLI: projects and keys, on the database in SIMWIRE_DATABASE_URL."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from app.cli import main

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
