"""A site file saved as a block loads back by name; its secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.site import load_site_file
from deployments.cli import main
from tests.conftest import SITES


@pytest.mark.usefixtures("prefect_server")
async def test_site_save_command_round_trip(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from blocks.upgrade_site import load_site_block

    monkeypatch.setenv("RUBIN_UPGRADE_ARGOCD_PASSWORD", "argo-s3cret-value")
    monkeypatch.setenv("RUBIN_UPGRADE_SLACK_TOKEN", "xoxb-s3cret-token")
    import argparse

    from deployments.cli_site import run_save

    code = await run_save(argparse.Namespace(site_file=SITES / "tts.yaml", name="tts-test"))
    assert code == 0
    out = capsys.readouterr().out
    assert "saved block rubin-upgrade-site/tts-test" in out
    assert "argocd_password, slack_token" in out
    assert "s3cret" not in out

    monkeypatch.delenv("RUBIN_UPGRADE_ARGOCD_PASSWORD")
    monkeypatch.delenv("RUBIN_UPGRADE_SLACK_TOKEN")
    block = await load_site_block("tts-test")
    assert block.site == load_site_file(SITES / "tts.yaml")
    secrets = block.credentials()
    assert secrets.argocd_password is not None
    assert secrets.argocd_password.get_secret_value() == "argo-s3cret-value"
    assert secrets.slack_token is not None
    assert secrets.slack_token.get_secret_value() == "xoxb-s3cret-token"
    assert secrets.love_password is None
    assert "s3cret" not in repr(block)


def test_check_command_reports_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.yaml"
    path.write_text((SITES / "bts.yaml").read_text().replace("name: 'ESS:104'", "name: 'ESS:abc'"))
    assert main(["site", "check", "--site-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: invalid site configuration" in err
    assert "(ESS:abc).name" in err
    assert main(["site", "check", "--site-file", str(SITES / "bts.yaml")]) == 0
    assert "106 CSCs (104 Kubernetes Jobs)" in capsys.readouterr().out


@pytest.mark.usefixtures("prefect_server")
async def test_sign_off_command_refuses_a_run_that_is_not_paused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    from prefect import flow

    from deployments.cli_signoff import run

    @flow(name="finishes-at-once")
    async def finishes() -> int:
        return 1

    state = await finishes(return_state=True)
    args = argparse.Namespace(
        run=str(state.state_details.flow_run_id),
        gate=None,
        operator="alice",
        decision="proceed",
        confirm_site="sim",
        notes="",
        phalanx_pr_url=None,
    )
    assert await run(args) == 1
    err = capsys.readouterr().err
    assert "not signed off" in err
    assert "is not paused at a sign-off (it is Completed)" in err
    args.run = "no-run-has-this-name"
    assert await run(args) == 1
    assert "0 flow runs are named 'no-run-has-this-name'" in capsys.readouterr().err
