"""`ansible-test sanity --test validate-modules` on this checkout, without the internet.

Run by `make test` (target `sanity`). validate-modules reads every module's DOCUMENTATION,
EXAMPLES and RETURN, checks them against Ansible's schema, imports the module and compares its
argument spec with its documentation.

Two things keep plain `ansible-test sanity` from running here, and this script does them instead:
- ansible-test runs a sanity test in a venv of its own and bootstraps pip into it with a get-pip
  script downloaded from ci-files.testing.ansible.com, which an offline machine cannot reach. Its
  own error message says the script may be put into its cache instead: we put there a stand-in
  that installs the same pip version from the pip wheel PyPI serves.
- ansible-test needs the collection under `ansible_collections/<namespace>/<name>/`: it runs on a
  copy of the checkout's files (tracked and new, not ignored ones). The copy is a git repository
  of its own, since ansible-test lists files through the nearest one, which would otherwise be
  this checkout (where .venv/ is ignored).

Everything it writes (its home with venvs and cache, the copy) stays under .venv/sanity/, so
nothing lands in ~ and another checkout's run is not touched.

Usage: python tests/sanity/validate_modules.py [more ansible-test arguments]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ansible_test._internal.python_requirements import get_venv_packages

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / ".venv" / "sanity"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

GET_PIP_STAND_IN = '''\
"""Stand-in for get-pip.py, written by weltgewebe.ops' tests/sanity/validate_modules.py:
runs pip {version} from its wheel beside this file (downloaded from PyPI)."""
import sys

sys.path.insert(0, {wheel!r})
from pip._internal.cli.main import main  # noqa: E402

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall", *args]))
'''


class _Python:
    version = PYTHON_VERSION


def provide_pip_bootstrap(home: Path) -> None:
    """Put a get-pip stand-in where ansible-test looks for its cached download."""
    version = get_venv_packages(_Python())["pip"]
    cache = home / ".ansible" / "test" / "cache"
    script = cache / f"get_pip_{version.replace('.', '_')}.py"
    if script.exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / f"pip-{version}-py3-none-any.whl"
    if not wheel.exists():
        print(f"sanity: downloading the pip {version} wheel from PyPI for ansible-test's venvs", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(cache),
                f"pip=={version}",
            ],
            check=True,
        )
    script.write_text(GET_PIP_STAND_IN.format(version=version, wheel=str(wheel)))


def copy_collection(target: Path) -> None:
    """The checkout's files, tracked and new (what git would not ignore), under ansible_collections/."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    if target.exists():
        shutil.rmtree(target)
    for name in filter(None, listed):
        source = REPO / name
        if not source.is_file():
            continue  # deleted in the working tree
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    subprocess.run(["git", "init", "-q", str(target)], check=True)


def main() -> int:
    home = WORK / "home"
    provide_pip_bootstrap(home)
    collection = WORK / "ansible_collections" / "weltgewebe" / "ops"
    copy_collection(collection)
    # ansible-test's home moves; pip (in its venvs) keeps reading the user's configuration (index, proxy)
    user_config = os.environ.get("XDG_CONFIG_HOME", str(Path.home() / ".config"))
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=user_config)
    ansible_test = str(Path(sys.executable).with_name("ansible-test"))
    argv = [ansible_test, "sanity", "--test", "validate-modules", "--python", PYTHON_VERSION, *sys.argv[1:]]
    print("sanity: ansible-test " + " ".join(argv[1:]), flush=True)
    return subprocess.run(argv, cwd=collection, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
