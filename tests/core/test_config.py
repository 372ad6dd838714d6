from pathlib import Path

import pytest

from mobieye.config import load_settings
from mobieye.errors import ConfigError


def test_defaults_work_out_of_the_box(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("MOBIEYE_"):
            monkeypatch.delenv(key)
    s = load_settings()
    assert s.worker.host == "127.0.0.1"
    assert s.webrtc.loopback_only is True
    assert s.webrtc.ice_servers == []
    assert s.detector.imgsz % 32 == 0


def test_precedence_flags_over_env_over_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detector:\n  imgsz: 640\n  conf: 0.4\nkeyframe:\n  interval: 12\n")
    monkeypatch.setenv("MOBIEYE_DETECTOR__IMGSZ", "320")
    monkeypatch.setenv("MOBIEYE_MODEL", "/models/m.onnx")
    s = load_settings(cfg, {"keyframe": {"interval": 4}})
    assert s.detector.imgsz == 320  # env beats YAML
    assert s.detector.conf == 0.4  # YAML beats default
    assert s.keyframe.interval == 4  # flag beats YAML
    assert s.detector.model == "/models/m.onnx"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"detector": {"imgsz": 333}}, "detector.imgsz"),
        ({"webrtc": {"codec": "av1"}}, "webrtc.codec"),
        ({"keyframe": {"interval": 2, "min_interval": 5}}, "min_interval"),
        ({"worker": {"port": 70000}}, "worker.port"),
        ({"detector": {"bogus": 1}}, "detector.bogus"),
    ],
)
def test_bad_values_are_named(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_settings(None, overrides)


def test_a_config_file_is_read_bounded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"/dev/zero is over 1024 KiB"):
        load_settings(Path("/dev/zero"))  # an endless file: refused, not read for ever
    big = tmp_path / "video.mp4"
    big.write_bytes(b"# comment\n" * 200_000)
    with pytest.raises(ConfigError, match=r"video\.mp4 is over 1024 KiB"):
        load_settings(big)


def test_bad_yaml_file_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("detector: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_settings(tmp_path / "missing.yaml")


def test_a_bound_left_at_its_default_follows_the_value_set_past_it() -> None:
    # The fuzzer's find: `mobieye demo --keyframe-interval 1` was refused over the default
    # min_interval (2), a setting the user never touched.
    s = load_settings(None, {"keyframe": {"interval": 1}})
    assert (s.keyframe.min_interval, s.keyframe.interval) == (1, 1)
    s = load_settings(None, {"keyframe": {"interval": 30}})
    assert (s.keyframe.interval, s.keyframe.max_interval) == (30, 30)
    s = load_settings(None, {"webrtc": {"max_bitrate_kbps": 50}})
    assert s.webrtc.min_bitrate_kbps == 50
    # Both given and contradicting: refused, naming both values.
    with pytest.raises(ConfigError, match="min_interval 3 must not exceed interval 2"):
        load_settings(None, {"keyframe": {"interval": 2, "min_interval": 3}})
    with pytest.raises(ConfigError, match="min_bitrate_kbps 500 must not exceed max_bitrate"):
        load_settings(None, {"webrtc": {"min_bitrate_kbps": 500, "max_bitrate_kbps": 100}})
