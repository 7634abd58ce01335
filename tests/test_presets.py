"""Controller presets with foot-switch gestures (manual clock), setlists, styles, user overrides."""


from drummachine.live import presets


def test_shipped_presets_all_load():
    assert set(presets.names("controllers")) >= {"footswitch", "pads", "knobs"}
    assert presets.load_setlist("friday_gig").songs[0] == "highway_rock"
    assert presets.check_all() == []


def test_a_bad_user_preset_never_stops_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    user = tmp_path / "drummachine"
    (user / "controllers").mkdir(parents=True)
    (user / "controllers" / "broken.toml").write_text("[[map]]\ncc = 1\naction = \"nope\"\n")
    (user / "controllers" / "pads.toml").write_text("name = \"My pads\"\n[[map]]\nnote = 60\naction = \"fill\"\n")
    (user / "styles.toml").write_text("[rock]\nswing = 5.0\n")
    problems = presets.check_all()
    assert any("broken.toml" in p and "unknown action" in p for p in problems)
    assert any("styles.toml" in p and "rock.swing" in p for p in problems)
    assert presets.load_controller("pads").name == "My pads"  # the user's wins
    assert presets.load_controller("footswitch").switches  # the shipped ones still load
    assert presets.load_styles().get("rock") == presets.load_styles().get("rock")
