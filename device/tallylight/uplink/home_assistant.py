"""Home Assistant's conversation, for text mode: a sentence goes out as text, the reply comes back as text
and (when Home Assistant's pipeline has TTS) as speech audio. No audio ever goes out this way.

Which API, and why: Home Assistant's WebSocket `assist_pipeline/run` from the intent stage
(start_stage "intent", end_stage "tts", input {text}, device_id), with a long-lived access token read from
a file only the uplink's user can read. The other path, an ESPHome `HomeassistantActionRequest` calling
`conversation.process` with `wants_response` (aioesphomeapi 46 has the request's `wants_response` and a
`HomeassistantActionResponse` with `response_data`), was not chosen:
- it only works after the owner turns on "Allow the device to perform Home Assistant actions" for the
  device, which lets the device call *any* action in Home Assistant, and it is off for new devices;
- `conversation.process` returns text only: no TTS, so the reply would always be espeak-ng's voice and
  the owner's chosen pipeline voice would be lost;
- it carries no device_id, so "turn on the lights" has no area; the pipeline run does (core PR #103939).
HA's ESPHome satellite itself cannot help: it starts pipelines only at the wake word or STT stage, which
needs audio. The token can be a non-admin user's (assist_pipeline/run does not need admin); the README
says to make a dedicated user for it.

The WebSocket messages (developers.home-assistant.io, "WebSocket API" and "Assist pipelines"):
`auth_required` -> `auth` {access_token} -> `auth_ok` | `auth_invalid`; then `assist_pipeline/run` with an
id, answered by a `result` and `event`s for that id: run-start, intent-start, intent-end (the reply in
intent_output.response.speech.plain.speech), tts-start (engine, language, voice), tts-end
(tts_output.url, mime_type), run-end, or error {code, message}.

TTS audio: fetched only from the Home Assistant host in the configured URL (or, for announcements, the
host whose ESPHome connection sent them): another host, or a redirect to one, is refused. Size cap and
timeout. Only WAV is decoded (`tts_audio`): when the pipeline's engine gives MP3 or FLAC, the uplink asks
Home Assistant for the same sentence as WAV, 16 kHz mono (POST /api/tts_get_url with options
preferred_format / preferred_sample_rate / preferred_sample_channels; Home Assistant converts with its
own ffmpeg), and if that fails the daemon speaks the reply text itself.

Everything a peer says is checked; anything wrong is a `ConversationError(code, message)` with one line
for the log and the daemon, never a traceback. Every wait has a timeout. One connection is kept and
reused (no TLS+auth handshake per sentence); it is made again when it breaks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tallylight.errors import TallylightError
from tallylight.uplink import messages
from tallylight.uplink.private_file import read_private

_LOG = logging.getLogger(__name__)

MAX_TTS_BYTES = 8 * 1024 * 1024  # a minute of 22 kHz 16-bit WAV is 2.6 MB; 16 kHz mono is 1.9 MB
MAX_REDIRECTS = 3
MAX_EXPOSED_ENTITIES = 2000  # entity ids asked about; the names sent on are capped again (messages.py)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # one WebSocket message (the entity list of a big home is ~1 MB)
_TOKEN = re.compile(r"[A-Za-z0-9._-]{20,2000}")  # a JWT: three base64url parts
WAV_OPTIONS = {"preferred_format": "wav", "preferred_sample_rate": messages.PCM_RATE, "preferred_sample_channels": 1}


class ConversationError(TallylightError):
    """The conversation with Home Assistant failed: `code` (Home Assistant's or ours), and what happened."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class HomeAssistantConfigError(TallylightError):
    exit_code = 78


@dataclass(frozen=True, slots=True)
class HomeAssistantOptions:
    url: str  # http(s)://host:port, no path
    token: str = field(repr=False)  # never in a log line or a repr
    device_id: str | None = None  # Home Assistant's id of this device, for the area of "turn on the lights"
    pipeline: str | None = None  # a pipeline id; None: Home Assistant's preferred pipeline
    timeout_s: float = 15.0  # one whole run, connecting included
    tts_timeout_s: float = 10.0
    max_tts_bytes: int = MAX_TTS_BYTES

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or ""

    @property
    def websocket_url(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, "/api/websocket",
                                        "", ""))


def check_url(url: str) -> str:
    """The Home Assistant URL, normalized (no trailing slash), or HomeAssistantConfigError naming the fix."""
    parts = urllib.parse.urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password
            or parts.path not in ("", "/") or parts.query or parts.fragment or port == -1):
        raise HomeAssistantConfigError(f"home_assistant.url = {url[:100]!r}: give Home Assistant's address as "
                                       "http://HOST:8123 (no path, no user name)")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def load_token(path: Path) -> str:
    token = read_private(path, "Home Assistant token",
                         "make a long-lived access token in Home Assistant (your profile, Security) and save it "
                         "there, mode 0600, owned by the uplink's user", max_chars=4096)
    if not _TOKEN.fullmatch(token):
        raise HomeAssistantConfigError(f"{path} does not hold a Home Assistant access token (one line of "
                                       "letters, digits, '.', '_' and '-')")
    return token


@dataclass(frozen=True, slots=True)
class Reply:
    """What Home Assistant answered: the text to say, and where its speech is (if its pipeline has TTS)."""

    speech: str
    tts_url: str | None = None
    tts_mime: str = ""
    tts_engine: str = ""
    tts_language: str = ""
    tts_voice: str = ""


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _text(value: Any, cap: int) -> str:
    return messages.clean_text(value, cap) if isinstance(value, str) else ""


class HomeAssistantClient:
    """One Home Assistant: the conversation over its WebSocket API, and fetching its audio."""

    def __init__(self, options: HomeAssistantOptions) -> None:
        self.options = options
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = 0
        self._lock = asyncio.Lock()
        self.ha_version = ""

    # --- the connection ---

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env=False: no proxy from the environment; Home Assistant is on the local network.
            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise ConversationError("closed", "Home Assistant closed the connection")
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise ConversationError("closed", f"the connection broke ({str(ws.exception())[:100]})")
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConversationError("bad_reply", f"Home Assistant sent a {msg.type.name} message, not JSON text")
        try:
            obj = json.loads(msg.data)
        except ValueError:
            raise ConversationError("bad_reply", "Home Assistant sent something that is not JSON") from None
        if not isinstance(obj, dict):
            raise ConversationError("bad_reply", f"Home Assistant sent JSON {type(obj).__name__}, not an object")
        return obj

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        if self._ws is not None and not self._ws.closed:
            return self._ws
        try:
            ws = await self._http().ws_connect(self.options.websocket_url, max_msg_size=MAX_MESSAGE_BYTES,
                                               heartbeat=30.0, autoping=True)
        except aiohttp.WSServerHandshakeError as e:
            raise ConversationError("not_home_assistant", f"{self.options.websocket_url} is no Home Assistant "
                                    f"WebSocket (HTTP {e.status})") from None
        except (aiohttp.ClientError, OSError) as e:
            raise ConversationError("unreachable", f"cannot reach {self.options.url} ({str(e)[:120]})") from None
        try:
            hello = await self._receive(ws)
            if hello.get("type") != "auth_required":
                raise ConversationError("bad_reply", f"expected auth_required, got {str(hello.get('type'))[:40]!r}")
            await ws.send_json({"type": "auth", "access_token": self.options.token})
            answer = await self._receive(ws)
            if answer.get("type") == "auth_invalid":
                raise ConversationError("auth_invalid", "Home Assistant refused the token "
                                        f"({_text(answer.get('message'), 100)}): make a new one")
            if answer.get("type") != "auth_ok":
                raise ConversationError("bad_reply", f"expected auth_ok, got {str(answer.get('type'))[:40]!r}")
        except BaseException:
            await ws.close()
            raise
        self.ha_version = _text(answer.get("ha_version"), 40)
        self._ws = ws
        _LOG.info("connected to Home Assistant %s at %s", self.ha_version, self.options.url)
        return ws

    async def _command(self, ws: aiohttp.ClientWebSocketResponse, body: dict[str, Any]) -> int:
        self._ids += 1
        await ws.send_json({"id": self._ids, **body})
        return self._ids

    async def _result(self, ws: aiohttp.ClientWebSocketResponse, msg_id: int) -> Any:
        """The `result` for msg_id (messages for other ids, late ones of an earlier run, are skipped)."""
        while True:
            obj = await self._receive(ws)
            if obj.get("id") != msg_id:
                continue
            if obj.get("type") != "result":
                raise ConversationError("bad_reply", f"expected a result, got {str(obj.get('type'))[:40]!r}")
            if obj.get("success") is not True:
                raise ConversationError(_text(_get(obj, "error", "code"), 60) or "failed",
                                        _text(_get(obj, "error", "message"), 300) or "Home Assistant said no")
            return obj.get("result")

    async def request(self, body: dict[str, Any]) -> Any:
        """One plain WebSocket command (e.g. get_states), its result, within the timeout."""
        async with self._lock:
            try:
                async with asyncio.timeout(self.options.timeout_s):
                    ws = await self._connect()
                    return await self._result(ws, await self._command(ws, body))
            except TimeoutError:
                await self._drop()
                raise ConversationError("timeout", f"no answer from Home Assistant within "
                                        f"{self.options.timeout_s:g} s") from None
            except ConversationError as e:
                if e.code in ("closed", "bad_reply", "unreachable", "not_home_assistant", "auth_invalid"):
                    await self._drop()
                raise

    async def find_device_id(self, mac: str) -> str | None:
        """Home Assistant's id of the device whose connections hold this MAC (the ESPHome integration
        registers it so), or None; a failure is one log line, and the run goes on without an area."""
        try:
            devices = await self.request({"type": "config/device_registry/list"})
        except ConversationError as e:
            _LOG.warning("could not look this speaker up in Home Assistant's devices (%s): no area context",
                         messages.clean_text(str(e), 200))
            return None
        want = mac.lower()
        for dev in devices if isinstance(devices, list) else ():
            conns = _get(dev, "connections")
            if isinstance(conns, list) and any(isinstance(c, list) and len(c) == 2 and c[0] == "mac"
                                               and isinstance(c[1], str) and c[1].lower() == want for c in conns):
                dev_id = _get(dev, "id")
                if isinstance(dev_id, str) and messages._ID.fullmatch(dev_id):
                    return dev_id
        _LOG.info("this speaker (%s) is not among Home Assistant's devices yet: no area context", mac)
        return None

    # --- the names Home Assistant exposes to Assist ---

    async def exposed_names(self) -> tuple[list[str], list[str]]:
        """(entity names, area names) as Home Assistant's own Assist hears them: each entity exposed to
        "conversation" (homeassistant/expose_entity/list), by its friendly name (get_states) and its aliases
        (config/entity_registry/get_entries), and every area by its name and aliases
        (config/area_registry/list). Raw text from the network: the caller cleans and bounds it.
        ConversationError when Home Assistant does not answer these (the aliases are optional)."""
        exposed = await self.request({"type": "homeassistant/expose_entity/list"})
        table = _get(exposed, "exposed_entities")
        ids = sorted(k for k, v in table.items() if isinstance(k, str) and isinstance(v, dict)
                     and v.get("conversation") is True)[:MAX_EXPOSED_ENTITIES] if isinstance(table, dict) else []
        wanted = set(ids)
        names: list[str] = []
        states = await self.request({"type": "get_states"})
        for state in states if isinstance(states, list) else ():
            if isinstance(state, dict) and state.get("entity_id") in wanted:
                name = _get(state, "attributes", "friendly_name")
                if isinstance(name, str):
                    names.append(name)
        if ids:
            try:
                entries = await self.request({"type": "config/entity_registry/get_entries", "entity_ids": ids})
            except ConversationError as e:
                _LOG.info("Home Assistant gave no entity aliases (%s): friendly names only",
                          messages.clean_text(str(e), 120))
                entries = {}
            for entry in entries.values() if isinstance(entries, dict) else ():
                aliases = _get(entry, "aliases")
                names += [a for a in aliases if isinstance(a, str)] if isinstance(aliases, list) else []
        areas: list[str] = []
        registry = await self.request({"type": "config/area_registry/list"})
        for area in registry if isinstance(registry, list) else ():
            aliases = _get(area, "aliases")
            for value in [_get(area, "name"), *(aliases if isinstance(aliases, list) else ())]:
                if isinstance(value, str):
                    areas.append(value)
        return names, areas

    # --- the conversation ---

    async def converse(self, text: str, on_event: Any = None) -> Reply:
        """Run Home Assistant's pipeline on `text` from the intent stage to TTS. `on_event(name)` hears
        "run_start" and "intent_end" as they come. ConversationError for anything that goes wrong."""
        body: dict[str, Any] = {"type": "assist_pipeline/run", "start_stage": "intent", "end_stage": "tts",
                                "input": {"text": text}}
        if self.options.device_id:
            body["device_id"] = self.options.device_id
        if self.options.pipeline:
            body["pipeline"] = self.options.pipeline
        body["timeout"] = self.options.timeout_s
        async with self._lock:
            try:
                async with asyncio.timeout(self.options.timeout_s):
                    ws = await self._connect()
                    run_id = await self._command(ws, body)
                    await self._result(ws, run_id)
                    return await self._events(ws, run_id, on_event)
            except TimeoutError:
                await self._drop()  # late events of this run must not be read as the next run's
                raise ConversationError("timeout", f"Home Assistant did not finish within "
                                        f"{self.options.timeout_s:g} s") from None
            except ConversationError as e:
                if e.code in ("closed", "bad_reply", "unreachable", "not_home_assistant", "auth_invalid"):
                    await self._drop()
                raise

    async def _events(self, ws: aiohttp.ClientWebSocketResponse, run_id: int, on_event: Any) -> Reply:
        speech: str | None = None
        tts: dict[str, str] = {}
        while True:
            obj = await self._receive(ws)
            if obj.get("id") != run_id or obj.get("type") != "event":
                continue
            event = obj.get("event")
            kind, data = _get(event, "type"), _get(event, "data")
            if not isinstance(kind, str):
                raise ConversationError("bad_reply", "an event without a type")
            data = data if isinstance(data, dict) else {}
            if kind == "error":
                raise ConversationError(_text(data.get("code"), 60) or "error",
                                        _text(data.get("message"), 300) or "Home Assistant's pipeline failed")
            if kind == "run-start" and on_event:
                on_event("run_start")
            elif kind == "intent-end":
                said = _get(data, "intent_output", "response", "speech", "plain", "speech")
                speech = _text(said, messages.MAX_TEXT_CHARS)
                if on_event:
                    on_event("intent_end")
            elif kind == "tts-start":
                tts.update(engine=_text(data.get("engine"), 200), language=_text(data.get("language"), 40),
                           voice=_text(data.get("voice"), 200))
            elif kind == "tts-end":
                out = data.get("tts_output")
                url = _get(out, "url")
                if isinstance(url, str) and url:
                    tts.update(url=url[:2000], mime=_text(_get(out, "mime_type"), 60))
            elif kind == "run-end":
                if speech is None:
                    raise ConversationError("bad_reply", "the run ended without an intent-end")
                return Reply(speech, tts.get("url"), tts.get("mime", ""), tts.get("engine", ""),
                             tts.get("language", ""), tts.get("voice", ""))

    async def wav_url(self, reply: Reply) -> str | None:
        """The reply's speech as WAV at 16 kHz mono: Home Assistant converts it (POST /api/tts_get_url).
        None when it cannot (no engine named, or Home Assistant refuses); the log says why."""
        if not reply.tts_engine or not reply.speech:
            return None
        options: dict[str, Any] = dict(WAV_OPTIONS)
        if reply.tts_voice:
            options["voice"] = reply.tts_voice
        body = {"engine_id": reply.tts_engine, "message": reply.speech, "options": options}
        if reply.tts_language:
            body["language"] = reply.tts_language
        try:
            async with asyncio.timeout(self.options.tts_timeout_s):
                resp = await self._http().post(f"{self.options.url}/api/tts_get_url", json=body,
                                               headers={"Authorization": f"Bearer {self.options.token}"},
                                               allow_redirects=False)
                async with resp:
                    if resp.status != 200:
                        _LOG.warning("Home Assistant would not make WAV speech (HTTP %d)", resp.status)
                        return None
                    got = json.loads((await resp.content.read(65536)).decode("utf-8", "replace"))
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            _LOG.warning("asking Home Assistant for WAV speech failed: %s", str(e)[:120] or type(e).__name__)
            return None
        path = _get(got, "path") or _get(got, "url")
        return path[:2000] if isinstance(path, str) and path else None

    # --- audio from Home Assistant ---

    async def fetch(self, url: str, allowed_hosts: frozenset[str] = frozenset()) -> bytes:
        """The bytes at `url` (relative: on the configured Home Assistant), refused unless its host is the
        configured one or in allowed_hosts; redirects are followed only to such hosts. Capped, timed."""
        return await fetch_audio(self._http(), url, self.options.url,
                                 allowed_hosts | {self.options.host}, self.options.max_tts_bytes,
                                 self.options.tts_timeout_s)


async def fetch_audio(session: aiohttp.ClientSession, url: str, base: str, allowed_hosts: frozenset[str],
                      max_bytes: int, timeout_s: float) -> bytes:
    """See HomeAssistantClient.fetch; `base` resolves a relative URL (None-like "" : no relative URLs)."""
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(MAX_REDIRECTS + 1):
                full = urllib.parse.urljoin(base + "/", url) if base else url
                parts = urllib.parse.urlsplit(full)
                if parts.scheme not in ("http", "https") or parts.username or parts.password:
                    raise ConversationError("refused_url", f"not an http(s) URL on Home Assistant: {full[:120]!r}")
                if (parts.hostname or "").lower() not in {h.lower() for h in allowed_hosts if h}:
                    raise ConversationError("refused_url", f"audio from {parts.hostname!r} refused: only "
                                            f"Home Assistant's host ({', '.join(sorted(h for h in allowed_hosts if h))}) "
                                            "may send it")
                async with session.get(full, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        url, base = resp.headers.get("Location", ""), full
                        continue
                    if resp.status != 200:
                        raise ConversationError("tts_fetch", f"HTTP {resp.status} for the speech audio")
                    if (resp.content_length or 0) > max_bytes:
                        raise ConversationError("tts_too_big", f"the speech audio is {resp.content_length} bytes, "
                                                f"over the cap of {max_bytes}")
                    data = bytearray()
                    async for piece in resp.content.iter_chunked(65536):
                        data += piece
                        if len(data) > max_bytes:
                            raise ConversationError("tts_too_big", f"the speech audio is over the cap of {max_bytes} "
                                                    "bytes")
                    return bytes(data)
            raise ConversationError("refused_url", f"more than {MAX_REDIRECTS} redirects for the speech audio")
    except TimeoutError:
        raise ConversationError("timeout", f"the speech audio did not arrive within {timeout_s:g} s") from None
    except (aiohttp.ClientError, OSError) as e:
        raise ConversationError("tts_fetch", f"fetching the speech audio failed ({str(e)[:120]})") from None
