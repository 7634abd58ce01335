"""Nothing escapes its place.

- A song, setlist or controller given by NAME resolves only inside its preset folders (shipped,
  then the user's): a name is letters, digits, ``_`` and ``-``. Anything with a slash or a
  ``.toml`` suffix is a file path, the user's own choice, taken as given. Kits are always folders
  given by path (``--kit DIR``); note maps are files (``--notemap FILE.toml``).
- A model file cannot make the runtime read files outside its own folder (ONNX external data) or
  load code (custom operator libraries).
- The shared memory and the socket the instrument creates are its user's alone.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from drummachine.core.errors import DrumMachineError

ROOT = Path(__file__).resolve().parents[1]
SONG = '[[sections]]\nname = "verse"\nbars = 1\n'


@pytest.fixture
def user_presets(tmp_path, monkeypatch):
    """A user config folder of our own, with a secret song outside every preset folder."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for kind in ("songs", "setlists", "controllers"):
        (tmp_path / "config" / "drummachine" / kind).mkdir(parents=True)
    (tmp_path / "secret.toml").write_text(SONG)
    return tmp_path


@pytest.mark.parametrize("name", ["../../x", "../secret", "..", ".", "a/../../b", "/etc/passwd", "~root",
                                  "x y", "slow_funk.bak", "", "-", "slow_funk\x00", "$HOME", "songs/../../x"])
@pytest.mark.parametrize("kind", ["songs", "setlists", "controllers"])
def test_a_name_that_would_leave_its_folder_is_refused(user_presets, kind, name):
    from drummachine.live.presets import find

    with pytest.raises(DrumMachineError) as err:
        find(kind, name)
    assert "\n" not in str(err.value)


def test_names_resolve_in_the_folders_user_first(user_presets):
    from drummachine.live.presets import SHIPPED, find

    assert find("songs", "slow_funk") == SHIPPED / "songs" / "slow_funk.toml"
    mine = user_presets / "config" / "drummachine" / "songs" / "slow_funk.toml"
    mine.write_text(SONG)
    assert find("songs", "slow_funk") == mine
    with pytest.raises(DrumMachineError, match="no song 'secret'; available: "):
        find("songs", "secret")  # beside the folder is not in it


def test_a_path_is_the_users_choice(user_presets, monkeypatch):
    from drummachine.live.presets import find

    secret = user_presets / "secret.toml"
    assert find("songs", str(secret)) == secret
    monkeypatch.chdir(user_presets / "config")
    assert find("songs", "../secret.toml") == Path("../secret.toml")  # explicit, with its .toml
    with pytest.raises(DrumMachineError, match=r"a song file must end in \.toml"):
        find("songs", "../secret")  # a slash makes it a path; without .toml it is not a song file
    with pytest.raises(DrumMachineError, match="no such song file"):
        find("songs", "../missing.toml")


def test_the_command_refuses_a_song_name_that_climbs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "drummachine", "generate", "--song", "../../x", "-o",
                        str(tmp_path / "o.mid")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("drummachine: error: ../../x: a song file must end in .toml")
    assert not (tmp_path / "o.mid").exists()


def test_setlist_entries_and_controllers_by_name_stay_inside(user_presets):
    from drummachine.live.presets import controller_stack, setlist_from_toml

    with pytest.raises(DrumMachineError, match="unknown song '../secret'"):
        setlist_from_toml('songs = ["slow_funk", "../secret"]', "gig.toml", ["slow_funk"])
    with pytest.raises(DrumMachineError, match=r"a controller file must end in \.toml"):
        controller_stack("../../secret", [])
    with pytest.raises(DrumMachineError, match="'..' is not a controller name"):
        controller_stack("..", [])


# --- model files ------------------------------------------------------------------------------------

def _model_with_external_data(folder: Path, location: str, data_at: Path | None = None) -> Path:
    onnx = pytest.importorskip("onnx")
    base = onnx.load(str(ROOT / "models" / "groove.int8.onnx"))
    tensor = next(t for t in base.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.raw_data)
    raw = tensor.raw_data
    if data_at is not None:
        data_at.parent.mkdir(parents=True, exist_ok=True)
        data_at.write_bytes(raw)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(base.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../weights.bin", "sub/../../weights.bin", "ABSOLUTE", "/etc/passwd",
                                      "link.bin"])
def test_a_model_cannot_read_outside_its_folder(tmp_path, location):
    from drummachine.model.model_file import check_external_data, load_model

    outside = tmp_path / "weights.bin"
    if location == "ABSOLUTE":
        location = str(outside)
    folder = tmp_path / "model"
    path = _model_with_external_data(folder, location, outside if location != "/etc/passwd" else None)
    if location == "link.bin":
        (folder / "link.bin").symlink_to(outside)
    with pytest.raises(DrumMachineError, match="its weights point outside the model's folder"):
        load_model(path)
    with pytest.raises(DrumMachineError):  # the check itself, before ONNX Runtime sees the file
        check_external_data(path, path.read_bytes())


def test_external_data_beside_the_model_is_allowed(tmp_path):
    from drummachine.model.generator import Generator
    from drummachine.model.model_file import external_data_locations, load_model

    folder = tmp_path / "model"
    path = _model_with_external_data(folder, "weights.bin", folder / "weights.bin")
    assert external_data_locations(path.read_bytes()) == ["weights.bin"]
    gen = Generator(str(path), loaded=load_model(path))
    assert gen.bar("rock", 110.0).shape == (16, 3, 9)


def test_the_shipped_models_are_self_contained():
    from drummachine.model.model_file import external_data_locations

    for name in ("groove.int8.onnx", "groove.fp32.onnx"):
        assert external_data_locations((ROOT / "models" / name).read_bytes()) == []


def test_a_custom_operator_is_a_refused_file_and_no_library_is_ever_loaded(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    from drummachine.model.model_file import load_model

    model = onnx.load(str(ROOT / "models" / "groove.int8.onnx"))
    model.graph.node.append(helper.make_node("Evil", ["logits"], ["evil"], domain="com.example.evil"))
    model.graph.output.append(helper.make_tensor_value_info("evil", onnx.TensorProto.FLOAT, None))
    model.opset_import.append(helper.make_opsetid("com.example.evil", 1))
    path = tmp_path / "evil.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(DrumMachineError, match="not a readable ONNX model"):
        load_model(path)
    # the runtime never asks ONNX Runtime to load operator code (a model names no library either way)
    for source in (ROOT / "drummachine").rglob("*.py"):
        text = source.read_text()
        assert "register_custom_ops_library" not in text and "session.load_custom_ops" not in text, source


# --- what the instrument creates: its user's alone ------------------------------------------------

def test_the_mixers_shared_memory_is_the_users_alone():
    from drummachine.audio.wire import SharedBlock

    block = SharedBlock(None, record_frames=16)
    try:
        mode = stat.S_IMODE(os.stat(f"/dev/shm/{block.name.lstrip('/')}").st_mode)
        assert mode & 0o077 == 0, oct(mode)
    finally:
        block.close()


def _socket_module():
    """Where the engine's socket is made (it moved from live/host.py to live/engine_socket.py)."""
    import importlib

    for name in ("drummachine.live.engine_socket", "drummachine.live.host"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "bind") and hasattr(module, "private_folder"):
            return module
    raise AssertionError("no module binds the engine's socket: update this test")


def test_the_engines_socket_is_the_users_alone(tmp_path):
    host = _socket_module()
    folder = tmp_path / "run"
    folder.mkdir(mode=0o755)
    host.private_folder(folder)  # a folder of ours open to others is closed to them first
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    sock = host.bind(folder / "engine.sock")
    try:
        assert stat.S_IMODE(os.stat(folder / "engine.sock").st_mode) == 0o600
    finally:
        sock.close()


#: (module, name) of places under /dev/shm the runtime only stats, never opens or makes: JACK's sockets
ONLY_LOOKED_AT = {("midi/jack_server.py", "JACK_SOCKET_FOLDER")}


def test_every_shared_memory_and_socket_is_known():
    """Shared memory: every block in the runtime is multiprocessing's SharedMemory, which creates
    it 0600 (checked above on the mixer's block) as long as nobody widens it; sockets and FIFOs: only
    the engine host creates one (checked above). A new kind gets a test above; this is its reminder."""
    import re

    sockets = re.compile(r"socket\.socket\(|mkfifo|socketpair|\.bind\(|connection\.Listener\(")
    widening = re.compile(r"shm_open|_posixshmem|fchmod|/dev/shm|\._mode")
    with_sockets, with_shared = set(), set()
    for source in (ROOT / "drummachine").rglob("*.py"):
        rel = source.relative_to(ROOT / "drummachine").as_posix()
        for line in source.read_text().splitlines():
            code = line.split("#")[0]
            if sockets.search(code):
                with_sockets.add(rel)
            if "SharedMemory(" in code:
                with_shared.add(rel)
            if (rel, code.split("=")[0].strip()) in ONLY_LOOKED_AT:
                continue
            assert not widening.search(code), f"{rel}: {line.strip()}: shared memory opened by hand"
    assert with_sockets <= {"live/host.py", "live/engine_socket.py"}, with_sockets
    assert "audio/wire.py" in with_shared


def test_shared_memory_as_the_runtime_creates_it_is_0600():
    from multiprocessing import shared_memory

    block = shared_memory.SharedMemory(create=True, size=64)
    try:
        assert stat.S_IMODE(os.stat(f"/dev/shm/{block.name.lstrip('/')}").st_mode) == 0o600
    finally:
        block.close()
        block.unlink()


def test_a_model_cannot_set_its_own_session_options(tmp_path, monkeypatch):
    """ONNX Runtime reads session options from a model's "ort_config" metadata when
    ORT_LOAD_CONFIG_FROM_MODEL=1 (measured: a model set intra_op_num_threads to 3). The runtime
    loads with its own options whatever the environment says."""
    onnx = pytest.importorskip("onnx")
    import json

    from drummachine.model.model_file import load_model

    model = onnx.load(str(ROOT / "models" / "groove.int8.onnx"))
    entry = model.metadata_props.add()
    entry.key, entry.value = "ort_config", json.dumps({"session_options": {"intra_op_num_threads": 3}})
    path = tmp_path / "config.onnx"
    path.write_bytes(model.SerializeToString())
    monkeypatch.setenv("ORT_LOAD_CONFIG_FROM_MODEL", "1")
    _, session = load_model(path, threads=1)
    assert session.get_session_options().intra_op_num_threads == 1
