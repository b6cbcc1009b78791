"""A drill on a schedule, unattended (role ``drill_schedule``, ``wgops drill-nightly``): after a
random delay, run the drill playbook with the operator's inventory, extra variables and
credentials; keep the reports within their retention; call the webhook when a drill failed and
when the first one after a failure passed. The drill itself refuses to run beside another (its
lock); a second scheduled start while one runs is refused by it, loudly, and counted as failed.

The configuration (``/etc/wgops/drill-schedule.json``, written by the role) holds no secret: the
credentials are in an environment file (``KEY=VALUE`` lines, readable by its owner only, never
passed on a command line) and, for a vault, in a password file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .render import read_history

WEBHOOK_ENV = "WGOPS_DRILL_WEBHOOK_URL"
CONFIG_KEYS = {
    "project_dir", "ansible_playbook", "inventory", "playbook", "extra_vars_file", "reports_dir", "env_file",
    "vault_password_file", "keep_reports", "keep_days", "random_delay_seconds", "log_file", "random_target_weekdays",
}  # fmt: skip


class NightlyError(RuntimeError):
    """The schedule's configuration or environment is not usable; the message says what to fix."""


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise NightlyError(f"{path}: {exc}; install the schedule again (playbooks/schedule.yml)") from exc
    unknown, missing = set(config) - CONFIG_KEYS, {"project_dir", "ansible_playbook", "reports_dir"} - set(config)
    if unknown or missing:
        raise NightlyError(f"{path}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
    return config


def load_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (no shell, nothing is expanded; a value in double quotes is a JSON
    string, in single quotes taken as it is); a file others can read is refused, as the
    credentials in it would be theirs too."""
    if not path:
        return {}
    file = Path(path)
    if not file.exists():
        raise NightlyError(
            f"the credentials file {path} does not exist: create it (0600) or unset drill_schedule_env_file"
        )
    if file.stat().st_mode & 0o077:
        raise NightlyError(f"the credentials file {path} can be read by others: chmod 600 {path}")
    env = {}
    for number, line in enumerate(file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().isidentifier():
            raise NightlyError(f"{path} line {number}: not KEY=VALUE")
        value = value.strip()
        if value.startswith('"'):  # as the role writes it: a JSON string
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise NightlyError(f"{path} line {number}: a value in double quotes must be a JSON string") from exc
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def prune(reports_dir: Path, keep: int, keep_days: float, now: dt.datetime | None = None) -> list[str]:
    """Remove drill directories beyond the newest ``keep`` (0: no count limit) and older than
    ``keep_days`` (0: no age limit); the newest (LATEST) always stays, history.jsonl keeps every
    drill's line. Returns the drill ids removed."""
    now = now or dt.datetime.now(dt.UTC)
    latest = (reports_dir / "LATEST").read_text().strip() if (reports_dir / "LATEST").exists() else ""
    drills = sorted(p for p in reports_dir.iterdir() if p.is_dir() and (p / "report.json").exists())
    removed = []
    for index, drill in enumerate(reversed(drills)):  # newest first
        age_days = (now.timestamp() - (drill / "report.json").stat().st_mtime) / 86400
        too_many = keep and index >= keep
        too_old = keep_days and age_days > keep_days
        if drill.name != latest and (too_many or too_old):
            shutil.rmtree(drill)
            removed.append(drill.name)
    return sorted(removed)


def notify(url: str, newest: dict[str, Any] | None, previous: dict[str, Any] | None, timeout: float = 10) -> str:
    """POST to the webhook when the drill failed, and when it passed after a failure; "" when
    nothing was sent, else what was. The URL is never logged (it often carries a token)."""
    import urllib.request

    if not url:
        return ""
    if newest is None or not newest.get("passed"):
        event = "drill_failed"
    elif previous is not None and not previous.get("passed"):
        event = "drill_recovered"
    else:
        return ""
    body = json.dumps({"event": event, "drill": newest, "previous": previous}).encode()
    if not url.startswith(("https://", "http://")):
        return f"{event} (not delivered: the webhook URL is not http(s))"
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - the operator's own URL
            return event
    except OSError as exc:
        return f"{event} (not delivered: {type(exc).__name__})"


def nightly_vars(config: dict[str, Any], today: dt.date, log=print) -> dict[str, Any]:
    """What this night's drill gets on top of the operator's variables: the reports directory and,
    on the weekdays ``random_target_weekdays`` names (ISO: 1 Monday - 7 Sunday), target random
    (random within window: a drawn base backup and instant). The other nights restore to what the
    operator set (latest by default), and measure the RPO."""
    extra: dict[str, Any] = {"drill_reports_dir": str(config["reports_dir"])}
    if today.isoweekday() in (config.get("random_target_weekdays") or []):
        extra["drill_restore_target"] = "random"
        log(f"drill-nightly: {today:%A}s draw the target (random within window): an older base backup and instant")
    return extra


def run(config: dict[str, Any], *, log=print, delay: bool = True) -> int:
    """One scheduled drill: its exit code (the drill's; 2 when it could not even start)."""
    env = {**os.environ, **load_env_file(config.get("env_file", ""))}
    reports_dir = Path(config["reports_dir"])
    if delay and config.get("random_delay_seconds"):
        pause = random.uniform(0, float(config["random_delay_seconds"]))  # noqa: S311 - spreading, not security
        log(f"drill-nightly: waiting {pause:.0f} s (random delay) before the drill")
        time.sleep(pause)
    before = read_history(reports_dir)
    argv = [config["ansible_playbook"], config.get("playbook") or "playbooks/drill.yml"]
    if config.get("inventory"):
        argv += ["-i", config["inventory"]]
    if config.get("extra_vars_file"):
        argv += ["-e", "@" + config["extra_vars_file"]]
    argv += ["-e", json.dumps(nightly_vars(config, dt.date.today(), log))]
    if config.get("vault_password_file"):
        argv += ["--vault-password-file", config["vault_password_file"]]
    started = time.monotonic()
    log(f"drill-nightly: {' '.join(argv[:2])} in {config['project_dir']}")
    log_file = Path(config.get("log_file") or os.devnull)
    with log_file.open("a") as out:
        try:
            code = subprocess.run(argv, cwd=config["project_dir"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  check=False).returncode  # fmt: skip
        except OSError as exc:
            log(f"drill-nightly: the drill could not start: {exc}")
            code = 2
    after = read_history(reports_dir)
    newest = after[-1] if len(after) > len(before) else None
    previous = before[-1] if before else None
    verdict = "no report written" if newest is None else ("PASSED" if newest.get("passed") else "FAILED")
    log(f"drill-nightly: the drill ended with exit code {code} after {time.monotonic() - started:.0f} s: {verdict}")
    if newest is None and code == 0:
        code = 1  # an exit code 0 without a report is not a passed drill
    removed = prune(reports_dir, int(config.get("keep_reports") or 0), float(config.get("keep_days") or 0))
    if removed:
        log(f"drill-nightly: retention removed {len(removed)} old report(s): {', '.join(removed)}")
    sent = notify(env.get(WEBHOOK_ENV, ""), newest, previous)
    if sent:
        log(f"drill-nightly: webhook: {sent}")
    return code
