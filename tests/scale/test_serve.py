"""``plait serve``: a schedule that really fires on a real Prefect server, one run at a time,
a markdown artifact per run, and a clean stop; refusals that say what to run instead."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import client, tiny_project

REPO = Path(__file__).parents[2]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    return {**env, "PLAIT_PROGRESS": "0", "PYTHONUNBUFFERED": "1", **extra}


def _serve(project: Path, *args: str, env: dict) -> subprocess.Popen:
    """``plait serve`` with its output in files: a pipe could be held open by a grandchild."""
    out, err = (open(project / f"serve.{k}", "w") for k in ("out", "err"))
    with out, err:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--project", str(project), *args],
                                cwd=REPO, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)


def _output(proc: subprocess.Popen, which: str) -> str:
    return Path(proc.args[proc.args.index("--project") + 1], f"serve.{which}").read_text()


def _ready(proc: subprocess.Popen, timeout: float = 240) -> dict:
    """The JSON document serve prints once its deployment is registered (``--json``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return json.loads(_output(proc, "out"))
        except json.JSONDecodeError:
            time.sleep(0.5)
    raise AssertionError(f"plait serve printed no deployment (exit {proc.poll()}):\n{_output(proc, 'out')}\n"
                         f"{_output(proc, 'err')[-3000:]}")


def _stop(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"plait serve did not stop within {timeout} s after SIGTERM:\n"
                             f"{_output(proc, 'err')[-3000:]}")
    return proc.returncode, _output(proc, "err")


def _wait_completed(api_url: str, deployment: str, timeout: float = 150):
    """The first flow run of ``deployment`` that reached Completed, and every run seen."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with client(api_url) as c:
        flow_name, name = deployment.split("/")
        dep = c.read_deployment_by_name(f"{flow_name}/{name}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
            done = [r for r in runs if r.state and r.state.is_completed()]
            if done:
                return dep, done[0], runs
            time.sleep(1.0)
    raise AssertionError(f"no run of {deployment} completed within {timeout} s; states: "
                         f"{[(r.name, r.state.name if r.state else None) for r in runs]}")


@pytest.mark.slow
def test_serve_runs_the_pipeline_on_its_interval_and_publishes_an_artifact_when_an_api_is_set(
        prefect_server, tmp_path):
    project = tiny_project(tmp_path / "proj", n=12)
    started = time.monotonic()
    proc = _serve(project, "--interval", "4", "--json", env=_env(PREFECT_API_URL=prefect_server,
                                                                   PREFECT_HOME=str(tmp_path / "home")))
    try:
        ready = _ready(proc)
        assert ready["api"] == prefect_server and ready["schedule"] == {"cron": None, "interval": 4.0}
        dep, run, runs = _wait_completed(prefect_server, ready["deployment"])
        assert dep.parameters == {"root": str(project)}
        assert dep.global_concurrency_limit.limit == 1
        assert dep.concurrency_options.collision_strategy.value == "CANCEL_NEW"
        assert dep.schedules and dep.schedules[0].schedule.interval.total_seconds() == 4
        assert run.auto_scheduled  # created by the schedule, not by hand
        # one run per project: no two runs of this deployment were ever running at once
        ran = [r for r in runs if r.run_count > 0]  # CANCEL_NEW: an overlapping run never starts
        spans = sorted((r.start_time, r.end_time or dt.datetime.now(dt.timezone.utc)) for r in ran)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans

        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        with client(prefect_server) as c:
            arts = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        assert [a.type for a in arts] == ["markdown"]
        md = arts[0].data
        assert "| synth | 12 | 12 | 0 | 0 | 0 |" in md  # ingest: read, written, unchanged, rejected, partial
        assert "## train mtl v1 (trained" in md and "| color |" in md
        assert "## score" in md and "| pred__mtl | 1 | 12 | 0 |" in md
        assert arts[0].key.startswith("plait-proj-")
    finally:
        code, err = _stop(proc)
    assert code == 0, err[-3000:]
    assert "polling" not in err and "ephemeral" not in err
    assert time.monotonic() - started < 240


@pytest.mark.slow
def test_serve_starts_its_own_server_and_stops_it_on_sigterm_without_an_api(tmp_path):
    from flows.prefect_env import api_healthy

    project = tiny_project(tmp_path / "proj", n=4)
    proc = _serve(project, "--cron", "0 3 * * *", "--json", env=_env())
    try:
        ready = _ready(proc)
        api = ready["api"]
        assert api.startswith("http://127.0.0.1:") and api_healthy(api)
        assert ready["schedule"]["cron"] == "0 3 * * *"
        assert (project / ".prefect" / "prefect.db").is_file()  # the server's database is the project's
    finally:
        code, err = _stop(proc)
    assert code == 0, err[-3000:]
    assert "stopping the Prefect server" in err and not api_healthy(api, timeout_s=2)
    assert "ephemeral" not in err and "Traceback" not in err


@pytest.mark.slow
def test_serve_stops_on_sigterm_while_its_server_is_still_starting(tmp_path):
    project = tiny_project(tmp_path / "proj", n=2)
    proc = _serve(project, "--cron", "0 3 * * *", env=_env())
    deadline = time.monotonic() + 120
    while "starting a Prefect server" not in _output(proc, "err") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the server process is up but not answering yet
    code, err = _stop(proc)
    assert code == 0, err[-3000:]
    assert "stopping the Prefect server" in err and "plait serve: stopped" in err
    assert "Traceback" not in err and "deployment" not in err


def test_the_serve_loop_stops_a_started_runner_when_the_flag_is_set_from_another_thread():
    """What SIGTERM does once the runner runs: set a flag that the loop polls (an exception
    raised by a signal handler can be swallowed; a set flag cannot)."""
    import asyncio
    import threading

    from flows.pipeline import _run_until

    class Runner:
        started = False
        stopped_by = None

        async def start(self):
            self.started = True
            self.release = asyncio.Event()
            await self.release.wait()

        async def astop(self):
            self.stopped_by = "astop"
            self.release.set()

    runner, stop = Runner(), threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    asyncio.run(_run_until(runner, stop, poll_s=0.05))
    assert runner.stopped_by == "astop" and time.monotonic() - t0 < 5

    class StartsLate(Runner):  # SIGTERM while the runner is still starting: let it start, then stop it
        async def start(self):
            await asyncio.sleep(0.3)
            await super().start()

    late, stop = StartsLate(), threading.Event()
    stop.set()
    asyncio.run(_run_until(late, stop, poll_s=0.05))
    assert late.stopped_by == "astop"  # its exit pauses the schedule

    class NeverStarts(Runner):
        async def start(self):
            await asyncio.sleep(3600)

    t0 = time.monotonic()
    asyncio.run(_run_until(NeverStarts(), stop, poll_s=0.05, start_grace_s=0.3))  # cancelled, not stopped
    assert time.monotonic() - t0 < 5


def test_serve_refuses_with_exit_2_and_the_command_without_api_when_no_server_is_allowed(tmp_path, monkeypatch, capsys):
    from flows.cli import main

    project = tiny_project(tmp_path / "proj", n=2)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    assert main(["serve", "--project", str(project), "--interval", "5", "--no-server"]) == 2
    err = capsys.readouterr().err
    assert "ephemeral API cannot run schedules" in err and "prefect server start --host 127.0.0.1" in err
    assert "PREFECT_API_URL=http://127.0.0.1:4200/api" in err and "runs the pipeline" not in err
    assert "point plait at it:\n  " in err and "\\n" not in err  # the command on its own line, not a "\n"


def test_serve_refuses_with_exit_2_when_the_configured_api_does_not_answer(tmp_path, monkeypatch, capsys):
    from flows.cli import main
    from flows.prefect_env import free_port

    project = tiny_project(tmp_path / "proj", n=2)
    url = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    assert main(["serve", "--project", str(project), "--interval", "5"]) == 2
    err = capsys.readouterr().err
    assert f"PREFECT_API_URL={url} does not answer" in err and "Fix:" in err and "polling" not in err


@pytest.mark.parametrize("args, words", [
    ([], "no schedule: plait.toml has no [schedule]"),
    (["--cron", "every tuesday"], "cron expression 'every tuesday' is not valid"),
    (["--interval", "-3"], "interval = -3"),
])
def test_serve_refuses_with_exit_2_when_the_schedule_is_missing_or_bad(tmp_path, monkeypatch, capsys, args, words):
    from flows.cli import main

    project = tiny_project(tmp_path / "proj", n=2)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    assert main(["serve", "--project", str(project), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Fix:" in err


def test_serve_takes_the_schedule_from_plait_toml_and_flags_override_it(tmp_path):
    from types import SimpleNamespace

    from flows.cli_serve import schedule_from
    from flows.config import ProjectConfig, ScheduleConfig

    tiny_project(tmp_path / "p", n=2, schedule=ScheduleConfig(cron="*/10 * * * *"))
    cfg = ProjectConfig.load(tmp_path / "p")
    assert schedule_from(SimpleNamespace(cron=None, interval=None), cfg) == ScheduleConfig(cron="*/10 * * * *")
    assert schedule_from(SimpleNamespace(cron=None, interval=30.0), cfg) == ScheduleConfig(interval=30.0)


def test_run_summary_tables_counts_and_scalar_metrics_when_given_stage_reports():
    from types import SimpleNamespace as R

    from flows.pipeline import artifact_key, run_summary

    md = run_summary({
        "ingest": [R(source="s", rows=10, written=9, unchanged=0, rejected=1, partial=0, items_version=3)],
        "embed": [R(table="emb__t", status="active", encoded=9, already_stored=0, rejected=0, removed=0, version=2)],
        "train": [R(head="mtl", version=2, reused=False, features_table="fused__f", features_version=4,
                    metrics={"color": {"accuracy": 0.5, "macro_f1": 0.25, "n": 4, "per_class": {"red": 1.0}}})],
    })
    assert "| s | 10 | 9 | 0 | 1 | 0 | 3 |" in md and "| emb__t | active | 9 | 0 | 0 | 0 | 2 |" in md
    assert "| task | accuracy | macro_f1 | n |" in md and "| color | 0.5000 | 0.2500 | 4 |" in md
    assert "per_class" not in md and "## fuse" not in md  # nested values and absent stages are left out
    assert artifact_key("/x/My Project") == artifact_key("/x/My Project/")
    assert artifact_key("/x/My Project").startswith("plait-my-project-")
