"""Role wgops_host deploys the library's source to a host (and role pg_archive into its sidecar
image's build context): a module that moved or was removed must not linger there, or the host
keeps importing an old copy beside the new one. Its library tasks run against a directory holding
a file from before the package move (the flat ``walfetch.py``, now ``archive/fetch.py``)."""

from __future__ import annotations

import json
import shutil
import subprocess

from tests.conftest import REPO, ansible_env, new_state_dir

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: The library's source, as role wgops_host deploys it
      ansible.builtin.include_role:
        name: weltgewebe.ops.wgops_host
        tasks_from: library.yml
      vars:
        wgops_host_library_dir: "{dest}"
"""


def deploy(play, *args: str) -> dict:
    out = subprocess.run(
        ["ansible-playbook", str(play), *args], cwd=REPO, env=ansible_env(json_output=True),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    return json.JSONDecoder().raw_decode(out.stdout)[0]["stats"]["localhost"]  # the timer line follows


def test_the_deploy_removes_library_files_no_longer_in_the_source():
    root = new_state_dir("wgops-test-library-")
    try:
        dest = root / "lib"
        stale = dest / "weltgewebe_ops" / "walfetch.py"
        stale.parent.mkdir(parents=True)
        stale.write_text("raise ImportError('the flat module from before the package move')\n")
        play = root / "deploy.yml"
        play.write_text(PLAY.format(dest=dest))

        checked = deploy(play, "--check")
        assert stale.exists(), "check mode removed a file"
        assert checked["changed"] > 0

        deploy(play)
        assert not stale.exists()
        deployed = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.py"))
        source = sorted(str(p.relative_to(REPO / "src")) for p in (REPO / "src" / "weltgewebe_ops").rglob("*.py"))
        assert deployed == source
        assert deploy(play)["changed"] == 0, "a second deploy changes nothing"
    finally:
        shutil.rmtree(root, ignore_errors=True)
