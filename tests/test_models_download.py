"""`tallylight models download`: against a real HTTP server on 127.0.0.1 serving a small zip shaped
like a vosk model (the real host is unreachable from CI)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tallylight.errors import TallylightError
from tallylight.speech.models import MODELS, ModelError, download_model
from tallylight.speech.recognizers import default_vosk_model

NAME = MODELS["small-en-us"].name


def _model_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # stored: big enough to cut mid-way
        zf.writestr(f"{NAME}/README", "test model\n")
        zf.writestr(f"{NAME}/conf/model.conf", "--beam=10.0\n")
        zf.writestr(f"{NAME}/am/final.mdl", os.urandom(200_000))
        zf.writestr(f"{NAME}/graph/words.txt", "<eps> 0\nlight 1\n")
    return buf.getvalue()


class _Server:
    """Serves one archive with Range support; `cut_after` closes the connection early (once),
    `ignore_range` answers 200 with the whole file to a Range request."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.cut_after: int | None = None
        self.ignore_range = False
        self.requests: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append(rng)
                body, status = server.data, 200
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(server.data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(server.data)}")
                        self.end_headers()
                        return
                    body, status = server.data[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.data) - 1}/{len(server.data)}")
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(body[: server.cut_after])
                    self.wfile.flush()
                    server.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{NAME}.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive() -> bytes:
    return _model_zip()


@pytest.fixture
def server(archive):
    s = _Server(archive)
    yield s
    s.close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir())


def test_good_download_unpacks_with_progress(tmp_path, server, archive):
    progress = io.StringIO()
    path = download_model("small-en-us", tmp_path, url=server.url, sha256=_sha(archive), progress=progress)
    assert path == tmp_path / NAME
    assert (path / "am" / "final.mdl").stat().st_size == 200_000
    assert (path / "conf" / "model.conf").read_text() == "--beam=10.0\n"
    assert _leftovers(tmp_path) == [NAME]  # no partial file, no temp folder
    shown = progress.getvalue()
    assert "\r" in shown and "100.0%" in shown and shown.endswith("\n")
    assert shown.count("\n") == 1  # one updating line
    # A second call finds the model and does not download again.
    n = len(server.requests)
    assert download_model("small-en-us", tmp_path, url=server.url, sha256=_sha(archive), progress=None) == path
    assert len(server.requests) == n


def test_bad_checksum_deletes_partial_and_unpacks_nothing(tmp_path, server):
    with pytest.raises(ModelError) as err:
        download_model("small-en-us", tmp_path, url=server.url, sha256="0" * 64, progress=None)
    assert "checksum mismatch" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, TallylightError)
    assert _leftovers(tmp_path) == []


def test_truncated_download_keeps_partial_then_resumes(tmp_path, server, archive):
    server.cut_after = 50_000
    with pytest.raises(ModelError) as err:
        download_model("small-en-us", tmp_path, url=server.url, sha256=_sha(archive), progress=None)
    msg = str(err.value)
    assert "cut short" in msg and "resume" in msg and "\n" not in msg
    partial = tmp_path / f"{NAME}.zip.partial"
    assert partial.stat().st_size == 50_000
    assert not (tmp_path / NAME).exists()
    path = download_model("small-en-us", tmp_path, url=server.url, sha256=_sha(archive), progress=None)
    assert server.requests == [None, "bytes=50000-"]
    assert (path / "am" / "final.mdl").stat().st_size == 200_000
    assert _leftovers(tmp_path) == [NAME]


def test_server_ignoring_range_restarts_from_zero(tmp_path, server, archive):
    partial = tmp_path / f"{NAME}.zip.partial"
    partial.write_bytes(archive[:70_000])
    server.ignore_range = True
    path = download_model("small-en-us", tmp_path, url=server.url, sha256=_sha(archive), progress=None)
    assert server.requests == ["bytes=70000-"]
    assert (path / "am" / "final.mdl").is_file()
    assert _leftovers(tmp_path) == [NAME]


def test_complete_partial_is_not_fetched_twice(tmp_path, server, archive):
    (tmp_path / f"{NAME}.zip.partial").write_bytes(archive)
    path = download_model("small-en-us", tmp_path, url=server.url, sha256=_sha(archive), progress=None)
    assert server.requests == [f"bytes={len(archive)}-"]  # answered 416: nothing more to fetch
    assert path.is_dir()


def test_unpack_is_atomic(tmp_path, server):
    # A valid zip with the right checksum but not a model: unpacking fails after extraction,
    # and neither the model folder nor a temp folder is left behind.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{NAME}/README", "no model here\n")
        zf.writestr("other/README", "two top folders\n")
    server.data = buf.getvalue()
    with pytest.raises(ModelError, match="does not hold a vosk model"):
        download_model("small-en-us", tmp_path, url=server.url, sha256=_sha(server.data), progress=None)
    assert not (tmp_path / NAME).exists()
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_corrupt_zip_with_matching_hash_is_an_error(tmp_path, server):
    server.data = b"PK\x03\x04 not really a zip" * 100
    with pytest.raises(ModelError, match="not a valid zip"):
        download_model("small-en-us", tmp_path, url=server.url, sha256=_sha(server.data), progress=None)
    assert _leftovers(tmp_path) == []


def test_no_network_says_copy_by_hand(tmp_path):
    # A port nobody listens on: connection refused, like a machine with no route to the host.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ModelError) as err:
        download_model("small-en-us", tmp_path, url=f"http://127.0.0.1:{port}/x.zip", progress=None)
    msg = str(err.value)
    assert msg.startswith("cannot reach 127.0.0.1:") and "to copy it by hand, fetch http://127.0.0.1:" in msg
    assert "\n" not in msg


def test_unknown_model_name(tmp_path):
    with pytest.raises(ModelError, match="unknown model 'huge-en'.*small-en-us"):
        download_model("huge-en", tmp_path)


def test_pinned_model_is_the_real_one():
    info = MODELS["small-en-us"]
    assert info.url == "https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip"
    assert len(info.sha256) == 64 and int(info.sha256, 16)
    assert info.size == 41_205_931


def _unreachable(request, timeout):
    raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))


def test_no_network_gives_url_checksum_and_folder_and_a_copy_by_hand_works(tmp_path, server, archive):
    """The message alone is enough to do the download's work by hand: fetch the URL, check the
    SHA-256, unzip into the folder; the recognizer then finds the model where `auto` looks."""
    dest = tmp_path / "state" / "models"
    info = MODELS["small-en-us"]
    with pytest.raises(ModelError) as err:
        download_model("small-en-us", dest, progress=None, opener=_unreachable)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cannot reach alphacephei.com: ")
    assert f"fetch {info.url} (41,205,931 bytes, SHA-256 {info.sha256})" in msg
    assert f"unzip it in {dest} so that {dest / NAME}/am exists" in msg
    # Follow the message, with the test server standing in for the real host.
    with pytest.raises(ModelError) as err:
        download_model("small-en-us", dest, url=server.url, sha256=_sha(archive), progress=None, opener=_unreachable)
    m = re.search(r"fetch (\S+) \(SHA-256 ([0-9a-f]{64})\) .* unzip it in (\S+) so that", str(err.value))
    assert m, err.value
    url, sha, folder = m.groups()
    with urllib.request.urlopen(url, timeout=10) as r:
        data = r.read()
    assert hashlib.sha256(data).hexdigest() == sha
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(folder)
    assert default_vosk_model(tmp_path / "state") == dest / NAME


def _tallylight(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tallylight", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_models_list_says_what_is_installed_where(tmp_path, archive):
    state = tmp_path / "state"
    conf = tmp_path / "t.toml"
    conf.write_text(f'[daemon]\nstate_dir = "{state}"\n')
    before = _tallylight("models", "list", "--config", str(conf))
    assert before.returncode == 0, before.stderr
    lines = before.stdout.splitlines()
    assert lines[0] == "vosk package: installed"
    assert lines[1] == f"small-en-us: {NAME} (US English, small (made for the Raspberry Pi), 41 MB download, licence Apache-2.0)"
    assert lines[2] == f"  not installed: `tallylight models download small-en-us` puts it in {state / 'models'}"
    assert lines[3].startswith("no vosk model installed, so pocketsphinx alone recognizes commands; with a vosk model")
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        zf.extractall(state / "models")
    after = _tallylight("models", "list", "--config", str(conf)).stdout.splitlines()
    assert after[2] == f"  installed: {state / 'models' / NAME}"
    assert after[3] == f'recognizer.engine "auto" uses {state / "models" / NAME}'
    conf.write_text(f'[daemon]\nstate_dir = "{state}"\n[recognizer]\nvosk_model = "{tmp_path / "typo"}"\n')
    typo = _tallylight("models", "list", "--config", str(conf)).stdout.splitlines()
    assert typo[-1] == f"recognizer.vosk_model = '{tmp_path / 'typo'}': NOT FOUND: fix the path or download it"


_CHECK_WITHOUT_VOSK = "import sys; sys.modules['vosk'] = None; from tallylight.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("engine, vosk_package, expect", [
    ("auto", True, "  note     vosk: no vosk model installed, so pocketsphinx alone recognizes commands; with a vosk "
                   'model, recognizer.engine "auto" (or "both") runs vosk beside pocketsphinx'),
    ("auto", False, "  note     vosk: the vosk package cannot be used (ModuleNotFoundError: "),
    ("vosk", False, "  PROBLEM  vosk: recognizer.engine = 'vosk' needs the vosk package, which cannot be used"),
    ("pocketsphinx", False, None),
])
def test_check_says_when_vosk_is_absent_and_what_it_would_bring(tmp_path, engine, vosk_package, expect):
    conf = tmp_path / "t.toml"
    conf.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[recognizer]\nengine = "{engine}"\n'
                    '[gpio]\npin_factory = "mock"\n[indicator]\nkind = "terminal"\n')
    argv = ["check", "--config", str(conf)]
    if vosk_package:
        r = _tallylight(*argv)
    else:
        r = subprocess.run([sys.executable, "-c", _CHECK_WITHOUT_VOSK, *argv], capture_output=True, text=True,
                           timeout=120)
    assert "Traceback" not in r.stderr
    said = [line for line in r.stdout.splitlines() if " vosk: " in line]
    if expect is None:
        assert said == []
    else:
        assert len(said) == 1 and said[0].startswith(expect), r.stdout
        assert "234 MiB" in said[0] or "PROBLEM" in said[0]
