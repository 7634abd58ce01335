from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "groove"
FULL_DATASET = Path(os.environ.get("DRUMMACHINE_GROOVE", ROOT.parent / "shared" / "data" / "groove"))


def fixture_midis() -> list[Path]:
    return sorted(FIXTURES.rglob("*.mid"))


def short_fixture(folder: Path, shorter_than_s: float = 40.0) -> Path:
    """The fixture's performances shorter than ``shorter_than_s`` (its fills and shorter beats,
    ~120 of its 570 bars), as a data folder of their own in ``folder``: the commands that step the
    model over every bar (evaluate) take a quarter of the time on it."""
    data = folder / "groove"
    data.mkdir()
    lines = (FIXTURES / "info.csv").read_text().splitlines()
    duration = lines[0].split(",").index("duration")
    kept = [line for line in lines[1:] if float(line.split(",")[duration]) < shorter_than_s]
    (data / "info.csv").write_text("\n".join([lines[0], *kept]) + "\n")
    for drummer in {line.split(",")[0] for line in kept}:
        (data / drummer).symlink_to(FIXTURES / drummer, target_is_directory=True)
    return data


@pytest.fixture(scope="session")
def full_dataset() -> Path:
    if not (FULL_DATASET / "info.csv").is_file():
        pytest.skip(f"no Groove MIDI Dataset at {FULL_DATASET}")
    return FULL_DATASET


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``drummachine`` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "drummachine", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def jack_server():
    """A real JACK server with the dummy backend (no sound card needed), started once for the run."""
    import shutil
    import time

    if not shutil.which("jackd"):
        pytest.skip("jackd is not installed (the README's set-up installs jackd2)")
    global JACKD_LOG
    running = subprocess.run(["jack_wait", "-c"], capture_output=True, text=True).stdout
    proc = None
    if "not running" in running or not running:
        JACKD_LOG = Path(tempfile.mkdtemp(prefix="drummachine-tests-")) / "jackd.log"
        os.environ[JACKD_LOG_ENV] = str(JACKD_LOG)  # the waiting tests' process counts its stalls too
        log = open(JACKD_LOG, "w")
        proc = subprocess.Popen(["jackd", "-d", "dummy", "-r", "48000", "-p", "128"],
                                stdout=log, stderr=subprocess.STDOUT)
        r = subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, text=True)
        assert "available" in r.stdout, f"JACK did not start: {r.stdout} {r.stderr}"
        time.sleep(0.2)
    elif os.environ.get(JACKD_LOG_ENV):  # the waiting tests' process, on the suite's server
        JACKD_LOG = Path(os.environ[JACKD_LOG_ENV])
    os.environ["DRUMMACHINE_MIDI_API"] = "jack"
    yield "jack"
    release_portaudio()
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(JACKD_LOG.parent, ignore_errors=True)
        os.environ.pop(JACKD_LOG_ENV, None)


def release_portaudio(within_s: float = 10.0) -> None:
    """PortAudio, if a test loaded it in this process, lets go of JACK before the server goes (or it
    aborts at exit). Only if loaded: importing sounddevice here would open and close a JACK client
    just to end the run, and libjack's open or close can hang for good on a stalled server (the
    suite's whole run once did, in CI); waited for at most ``within_s``, then the run goes on."""
    import warnings

    from drummachine.core.asked import Asked

    sd = sys.modules.get("sounddevice")
    if sd is None:
        return
    if not Asked(sd._terminate, name="portaudio-release").wait(within_s):
        warnings.warn(f"PortAudio did not let go of JACK within {within_s:.0f} s (libjack stuck on the server)")


def jack_probe():
    """benchmarks/jack_midi_probe.py: the JACK-Client recorder and sender the tests and benchmarks
    measure drummachine's MIDI with (independent of the code measured)."""
    import importlib.util

    if "jack_midi_probe" not in sys.modules:
        spec = importlib.util.spec_from_file_location("jack_midi_probe", ROOT / "benchmarks" / "jack_midi_probe.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["jack_midi_probe"] = module
    return sys.modules["jack_midi_probe"]


def wait_for(condition, seconds: float) -> bool:
    """Whether ``condition()`` came true within ``seconds`` (polled every 50 ms)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def play_listening_for_a_late_band(listen: str, log: Path, duration: int) -> subprocess.Popen:
    """`play` (headless, the stand-in model, MIDI only) at 116 bpm listening to ``listen``, a band
    that is not there yet: the tests start jack_metro's click under that name later (skipped where
    jackd2's example clients are not installed)."""
    import shutil

    if not shutil.which("jack_metro"):
        pytest.skip("jack_metro is not installed (jackd2's example clients)")
    return subprocess.Popen([sys.executable, "-m", "drummachine", "play", "--headless", "--fake-model", "--no-audio",
                             "--midi-virtual", "--listen", listen, "--bpm", "116", "--duration", str(duration),
                             "--log", str(log)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def midi_recorder(name: str, port: str = "rx"):
    """A JACK MIDI input ``name:port`` in a process of its own (out of this one's interpreter lock):
    ``(recorder, got)``, ``got`` filling with ``(time.monotonic() of the event's frame, [bytes...])``;
    ``recorder.close()`` when done (its JACK client goes too: the next test's recorder gets the
    same name)."""
    got: list = []
    return jack_probe().RecorderProcess(name, port=port, sink=got), got


def own_jack_server(monkeypatch, ports: int, label: str, rate: int = 48000, period: int = 128):
    """A JACK server of the test's own with ``ports`` ports a side (the shared one has two), at
    ``rate`` and ``period`` frames, named for this process; the mixer process and jack_connect
    find it through JACK_DEFAULT_SERVER.
    A generator for a fixture: ``yield from own_jack_server(monkeypatch, 4, "cue")``."""
    import shutil

    if not shutil.which("jackd"):
        pytest.skip("jackd is not installed")
    name = f"drummachine-{label}-{os.getpid()}-{ports}"
    folder = Path(tempfile.mkdtemp(prefix="drummachine-jackd-"))
    log = folder / "jackd.log"
    with open(log, "w") as out:  # its stalls void a failing test as the suite's server's do
        server = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", str(rate), "-p", str(period), "-P",
                                   str(ports), "-C", str(ports)], stdout=out, stderr=subprocess.STDOUT)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    OWN_JACKD_LOGS.add(log)
    try:
        r = subprocess.run(["jack_wait", "-w", "-t", "10"], capture_output=True, text=True)
        assert "available" in r.stdout, r.stdout + r.stderr
        yield name
    finally:
        server.terminate()
        server.wait(10)
        OWN_JACKD_LOGS.discard(log)
        shutil.rmtree(folder, ignore_errors=True)


# --- the soak and the waiting tests run beside the suite ---------------------------------------

#: minutes of the soak that tests/test_soak.py checks (the issue's "3-minute version in the suite")
SOAK_MINUTES = 3.0
SOAK: dict = {}  #: the soak's process and its JSON, once started
#: set in the second pytest process that runs the ``waiting`` tests: the file its reports go to
LANE_REPORTS = "DRUMMACHINE_TEST_LANE_REPORTS"
LANE: dict = {}  #: the waiting tests' node ids, their pytest process and its reports' file, once started


def pytest_collection_modifyitems(session, config, items):
    """The soak is three minutes of a real stage under faults, most of it waiting for time to pass:
    it plays beside the rest of the suite on a JACK server of its own (a busier host than a stage:
    all the better for a soak). The real-time tests over JACK go first, on a quiet host; the soak
    starts with the first test after them (see pytest_runtest_setup), tests/test_soak.py comes last
    and collects its report. A test marked ``waiting`` (over JACK, waiting on the wall clock for
    servers and inputs that come late or stall, with loose limits, measuring no timing) runs in a
    second pytest process started with the soak, beside the CPU-bound tests: its reports are
    replayed here, each under its own name, in its place after the others. Run without the soak
    (a file or -k), every test runs here in its collected order."""
    soak = [item for item in items if item.path.name == "test_soak.py"]
    if not soak or os.environ.get(LANE_REPORTS):
        return
    waiting = [item for item in items if item.get_closest_marker("waiting") is not None]
    realtime = [item for item in items if item not in soak and item not in waiting and (
        "jack_server" in getattr(item, "fixturenames", ()) or item.get_closest_marker("jack") is not None)]
    others = [item for item in items if item not in soak and item not in realtime and item not in waiting]
    items[:] = realtime + others + waiting + soak
    SOAK["starts_at"] = (others or waiting or soak)[0].nodeid
    LANE["nodeids"] = [item.nodeid for item in waiting]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.nodeid == SOAK.get("starts_at") and "proc" not in SOAK:
        start_soak()
        start_waiting_lane()


def start_soak() -> None:
    import shutil

    if not (shutil.which("jackd") and shutil.which("tmux")):
        return
    folder = Path(tempfile.mkdtemp(prefix="drummachine-soak-"))
    out = folder / "soak.json"
    env = {k: v for k, v in os.environ.items() if k not in ("JACK_DEFAULT_SERVER", "DRUMMACHINE_MIDI_API")}
    env["JACK_DEFAULT_SERVER"] = f"tests{os.getpid()}"
    with open(folder / "stderr", "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes",
                                 str(SOAK_MINUTES), "--json", str(out)], stdout=subprocess.DEVNULL, stderr=stderr,
                                env=env)
    SOAK.update(proc=proc, out=out, folder=folder)


def start_waiting_lane() -> None:
    if not LANE.get("nodeids"):
        return
    folder = Path(tempfile.mkdtemp(prefix="drummachine-lane-"))
    reports = folder / "reports.jsonl"
    reports.touch()
    with open(folder / "output", "w") as output:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *LANE["nodeids"]],
                                cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                env={**os.environ, LANE_REPORTS: str(reports)})
    LANE.update(proc=proc, reports=reports, folder=folder)


def pytest_configure(config):
    LANE["config"] = config


def pytest_runtest_logreport(report):
    """In the waiting tests' process: each report to the file the suite's process replays."""
    path = os.environ.get(LANE_REPORTS)
    if path:
        import json

        data = LANE["config"].hook.pytest_report_to_serializable(config=LANE["config"], report=report)
        with open(path, "a") as out:
            out.write(json.dumps(data) + "\n")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """A waiting test's reports, from its own process, in its place here (as pytest-xdist hands a
    worker's reports to the main process)."""
    if item.nodeid not in LANE.get("nodeids", ()) or "proc" not in LANE:
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in waiting_test_reports(item):
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    # what runtestprotocol's teardown does: the last test run here left its module's and package's
    # set-up for this one, which set up nothing; the next test needs them torn down as for any other
    item.session._setupstate.teardown_exact(nextitem)
    return True


def waiting_test_reports(item) -> list:
    """The reports of ``item`` once its process wrote its teardown, or once that process ended
    (then a failure saying so, with the end of its output, if the test's reports are not all
    there)."""
    import json

    config = item.config
    while True:
        ended = LANE["proc"].poll() is not None
        lines = LANE["reports"].read_text().split("\n")[:-1]  # the last: a line still being written, or ""
        found = [json.loads(line) for line in lines if line.strip()]
        mine = [data for data in found if data.get("nodeid") == item.nodeid]
        if any(data.get("when") == "teardown" for data in mine):
            return [config.hook.pytest_report_from_serializable(config=config, data=data) for data in mine]
        if ended:
            output = (LANE["folder"] / "output").read_text()[-3000:]
            return [pytest.TestReport(item.nodeid, item.location, {}, "failed",
                                      f"the waiting tests' process ended (code {LANE['proc'].returncode}) without "
                                      f"finishing this test; its output's end:\n{output}", "call")]
        time.sleep(0.2)


def pytest_sessionfinish(session, exitstatus):
    """A run that ended early (-x, ^C) does not leave the soak or the waiting tests playing."""
    import shutil

    for started in (SOAK, LANE):
        proc = started.get("proc")
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if started.get("folder"):
            shutil.rmtree(started["folder"], ignore_errors=True)


# --- a host that stalls JACK itself voids a real-time measurement --------------------------------

#: the log of the JACK server the tests started (None: one was already running, not the suite's)
JACKD_LOG: Path | None = None
#: where the suite's process tells the waiting tests' process that log is
JACKD_LOG_ENV = "DRUMMACHINE_TEST_JACKD_LOG"
#: the JACK servers of a test's own (``own_jack_server``) running now: their logs, counted too
OWN_JACKD_LOGS: set[Path] = set()
#: the dummy driver's own late wake-ups during one test from which the host, not the code under
#: test, decided the timing: a quiet machine has none (idle, and with ``jack_simple_client``: 0 in
#: 10 s each). One is enough: the driver starts its schedule again from a late wake-up, and a 20 ms
#: stall here put JACK's frame clock 17 ms behind the monotonic clock for good, which every test
#: timing JACK's frames against the engine's clock (within 0.5-1.5 ms) cannot tell from its own
#: error. It was 5: the suite failed in 4 of 6 runs of 2026-12-07 on JACK timing tests it did not
#: void (a kit a period off its notes, a MIDI flood's timing, 9 onsets for 8), each passing alone;
#: whether JACK stalled 1-4 times in them was not recorded (a failure now says when it did not)
HOST_STALLS_VOID = 1
DRIVER_LATE = b"JackTimedDriver::Process XRun"


def _jackd_logs() -> list[Path]:
    return [log for log in ([JACKD_LOG] if JACKD_LOG is not None else []) + sorted(OWN_JACKD_LOGS) if log.exists()]


def driver_late_wakeups(since: dict | None = None) -> tuple[int, dict]:
    """(late wake-ups of the dummy drivers logged after ``since`` (each log's size then), each
    log's size now). The figure each line gives is no use: a 20 ms stall here logged 10 us, and
    put the JACK clock 17 ms behind the monotonic clock."""
    count = 0
    sizes = {}
    for log in _jackd_logs():
        data = log.read_bytes()
        count += data[(since or {}).get(log, 0):].count(DRIVER_LATE)
        sizes[log] = len(data)
    return count, sizes


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A real-time test over JACK that fails while the host stalled JACK's own driver is reported
    as skipped, with both the stalls and the failure in the reason: on such a host every client
    is late, the code's own timing cannot be told from the host's. On a quiet host it fails."""
    if call.when == "setup" and ("jack_server" in item.fixturenames or OWN_JACKD_LOGS):
        item.jack_log_mark = driver_late_wakeups()[1]
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not report.failed or not hasattr(item, "jack_log_mark"):
        return
    stalls, _ = driver_late_wakeups(item.jack_log_mark)
    if stalls < HOST_STALLS_VOID:  # said beside the failure: the host did not stall JACK, the code failed
        report.sections.append(("JACK", "the dummy driver did not stall during this test"))
    else:
        failure = str(call.excinfo.value).splitlines()[0][:200] if call.excinfo else "failed"
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0,
                           f"Skipped: the host stalled JACK's own dummy driver {stalls} times during this test, so "
                           f"its real-time measurement is void here (it failed: {failure})")


# --- the one engine harness: an engine on a manual clock, a fake generator, a recording sink ---

SONG = """
name = "Test"
style = "rock"
bpm = 120
count_in = 1

[[sections]]
name = "intro"
bars = 2
fill_every = 0

[[sections]]
name = "verse"
bars = 0
fill_every = 0
"""


class Harness:
    """An engine driven by hand: ``run(seconds)`` pumps both loops on a manual clock (no sleeps)."""

    def __init__(self, song_text: str = SONG, gen=None, start: float = 100.0, **kw):
        from drummachine.core.engine import Engine
        from drummachine.core.events import MemorySink
        from drummachine.core.fake_generator import FakeGenerator
        from drummachine.core.song import song_from_toml
        from drummachine.core.transport import ManualClock

        self.clock = ManualClock(start)
        self.sink = MemorySink()
        self.song = song_from_toml(song_text, "test.toml", ("any", "rock", "funk"))
        self.engine = Engine(gen or FakeGenerator(), self.song, self.clock, [self.sink], **kw)

    def run(self, seconds: float, dt: float = 0.004, generate: bool = True) -> None:
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            if generate:
                self.engine.pump_generator()
            self.engine.pump()
            self.clock.advance(dt)

    def bar_notes(self, bar: int, voice: int | None = None):
        return [e for e in self.sink.notes() if e.step // 16 == bar and (voice is None or e.voice == voice)]


@pytest.fixture
def harness():
    """A factory: ``harness(song_text=..., gen=..., **engine options)`` -> Harness."""
    return Harness
