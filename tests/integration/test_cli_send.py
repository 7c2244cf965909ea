"""`simwire send` (single and CSV) and `simwire device pair`, charged like the API."""

from __future__ import annotations

import re

from click.testing import CliRunner

from app.cli import main
from app.domain import credentials


def run(database_url: str, *args: str):
    return CliRunner().invoke(main, list(args), env={"SIMWIRE_DATABASE_URL": database_url})


def test_send_single_and_csv_and_pair_a_device(database_url, tmp_path):
    created = run(database_url, "project", "create", "shop", "--json")
    project_id = re.search(r'"project_id": "(prj_\w+)"', created.output).group(1)
    assert run(database_url, "credits", "grant", project_id, "1").exit_code == 0

    single = run(
        database_url, "send", "--project", project_id, "--to", "+14155550100", "--message", "hi"
    )
    assert single.exit_code == 0, single.output
    assert "1 messages queued, 35000 USDC atomic units charged" in single.output

    csv_file = tmp_path / "bulk.csv"
    rows = "\n".join(f"+1415555{i:04d},Reminder {i},bulk" for i in range(150))
    csv_file.write_text("to,message,tag\n" + rows + "\n")
    bulk = run(database_url, "send", "--project", project_id, "--csv", str(csv_file))
    assert bulk.exit_code != 0 and "insufficient_credits" in bulk.output  # 150 × 0.035 > 1 USDC
    assert run(database_url, "credits", "grant", project_id, "10").exit_code == 0
    bulk = run(database_url, "send", "--project", project_id, "--csv", str(csv_file))
    assert bulk.exit_code == 0, bulk.output
    assert "150 messages queued" in bulk.output and bulk.output.count("request req_") == 2

    listing = run(database_url, "messages", "--project", project_id, "--limit", "500")
    assert listing.output.count("queued") >= 151

    paired = run(database_url, "device", "pair", project_id, "--name", "pixel")
    token = re.search(r"token:\s+(\S+)", paired.output).group(1)
    assert credentials.is_device_token(token)


def test_send_rejects_emergency_numbers_and_bad_csv(database_url, tmp_path):
    created = run(database_url, "project", "create", "shop", "--json")
    project_id = re.search(r'"project_id": "(prj_\w+)"', created.output).group(1)
    run(database_url, "credits", "grant", project_id, "1")
    blocked = run(database_url, "send", "--project", project_id, "--to", "112", "--message", "hi")
    assert blocked.exit_code != 0 and "emergency_number_blocked" in blocked.output
    bad = tmp_path / "bad.csv"
    bad.write_text("number,text\n1,2\n")
    result = run(database_url, "send", "--project", project_id, "--csv", str(bad))
    assert result.exit_code != 0 and "`to` and `message`" in result.output
