import json

import pytest

from weltgewebe_ops.core.settings import SandboxSettings, SettingsError
from weltgewebe_ops.events.relay import backoff_seconds
from weltgewebe_ops.sandbox import kms


def test_unknown_setting_is_named(tmp_path):
    with pytest.raises(SettingsError, match="archive_timout"):
        SandboxSettings.from_dict({"state_dir": str(tmp_path), "archive_timout": 5})


def test_unknown_port_is_named(tmp_path):
    with pytest.raises(SettingsError, match="ports settings: pg"):
        SandboxSettings.from_dict({"state_dir": str(tmp_path), "ports": {"pg": 1}})


def test_settings_file_is_private_and_round_trips(tmp_path):
    settings = SandboxSettings.from_dict(
        {"state_dir": str(tmp_path), "s3_secret_key": "s3cr3t", "names": {"stream": "X"}}
    )
    settings.save()
    assert (settings.settings_file.stat().st_mode & 0o777) == 0o600
    assert SandboxSettings.load(tmp_path) == settings
    assert json.loads(settings.settings_file.read_text())["names"]["stream"] == "X"


def test_redacted_location_hides_the_secret(tmp_path):
    loc = SandboxSettings.from_dict({"state_dir": str(tmp_path), "s3_secret_key": "s3cr3t"}).s3_location()
    assert "s3cr3t" not in json.dumps(loc.redacted())


@pytest.mark.parametrize(("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (10, 300.0)])
def test_relay_backoff(attempt, expected):
    assert backoff_seconds(attempt, 1.0, 300.0) == expected


def test_sandbox_kms_envelope(tmp_path):
    store = kms.KeyStore(tmp_path / "keys.json", "alias/test")
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    key_id = store.resolve("alias/test")
    out = kms.handle(store, "TrentService.GenerateDataKey", {"KeyId": "alias/test", "EncryptionContext": {"a": "b"}})
    back = kms.handle(
        store, "TrentService.Decrypt", {"CiphertextBlob": out["CiphertextBlob"], "EncryptionContext": {"a": "b"}}
    )
    assert back["Plaintext"] == out["Plaintext"]
    assert out["KeyId"].endswith(key_id)
    with pytest.raises(kms.KmsError, match="encryption context"):
        kms.handle(
            store, "TrentService.Decrypt", {"CiphertextBlob": out["CiphertextBlob"], "EncryptionContext": {"a": "c"}}
        )
    with pytest.raises(kms.KmsError, match="does not exist"):
        kms.handle(store, "TrentService.GenerateDataKey", {"KeyId": "alias/other"})
    # the key survives a restart: a new store object reads the same file
    again = kms.KeyStore(tmp_path / "keys.json", "alias/test")
    assert (
        kms.handle(
            again, "TrentService.Decrypt", {"CiphertextBlob": out["CiphertextBlob"], "EncryptionContext": {"a": "b"}}
        )["Plaintext"]
        == out["Plaintext"]
    )


def test_relay_backoff_is_spread_by_id_and_capped():
    assert backoff_seconds(3, 1.0, 300.0, outbox_id=7) == pytest.approx(4.28)
    assert backoff_seconds(3, 1.0, 300.0, outbox_id=27) == pytest.approx(4.28)
    assert backoff_seconds(20, 1.0, 300.0, outbox_id=19) == 300.0


def test_a_sandbox_of_the_old_schema_is_named_with_what_to_do(tmp_path):
    with pytest.raises(SettingsError, match=r"made by weltgewebe.ops 0.1.*make sandbox-down PURGE=1"):
        SandboxSettings.from_dict(
            {"state_dir": str(tmp_path), "names": {"checkpoints_table": "projection_checkpoints"}}
        )


def test_free_ports_are_chosen_below_the_ephemeral_range(monkeypatch, tmp_path):
    from weltgewebe_ops.core import procs

    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")
    assert procs.ephemeral_port_low(str(ranges)) == 32768
    monkeypatch.setattr(procs, "ephemeral_port_low", lambda: 32768)
    taken: set[int] = set()
    for _ in range(20):
        port = procs.free_port(taken)
        assert port >= procs.FREE_PORTS_FROM and port + 10000 < 32768
        assert port not in taken, "ports chosen together differ"
        taken.add(port)
