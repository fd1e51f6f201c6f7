"""Home Assistant's WebSocket and HTTP APIs, played by a local aiohttp server on 127.0.0.1.

The `homeassistant` package needs Python >= 3.13 and cannot run here, so this speaks the documented
messages instead: auth_required / auth / auth_ok / auth_invalid; assist_pipeline/run answered by a result
and the events run-start, intent-start, intent-end (speech), tts-start, tts-end (tts_output.url), run-end;
POST /api/tts_get_url; GET /api/tts_proxy/NAME; config/device_registry/list; and what the uplink reads for
the names exposed to Assist: homeassistant/expose_entity/list, get_states, config/entity_registry/get_entries,
config/area_registry/list. `behaviour` makes it
misbehave (wrong token, silence, a close mid-run, garbage). It records everything it received, and when.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave

import numpy as np
from aiohttp import WSMsgType, web

TOKEN = "eyJhbGciOiJIUzI1NiJ9.tallylight-test-token.c2lnbmF0dXJl"


def wav_bytes(seconds: float = 0.7, rate: int = 22050, channels: int = 1, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(x, channels).tobytes())
    return buf.getvalue()


class FakeHomeAssistant:
    def __init__(self, *, speech: str = "Turned on the kitchen light", tts: str = "wav",
                 behaviour: str = "normal", devices: list | None = None, entities: dict | None = None,
                 areas: list | None = None) -> None:
        self.speech = speech
        self.tts = tts  # "wav": the pipeline gives WAV; "mp3": MP3 first, WAV on request; "none": no TTS
        self.behaviour = behaviour  # normal | not_home_assistant | silent_run | close_mid_run | kill_mid_run | not_json | pipeline_error
        self.devices = devices or []
        # entity_id -> {"name": friendly name, "exposed": to Assist, "aliases": [...]}; areas: [{"name", "aliases"}]
        self.entities = entities or {}
        self.areas = areas or []
        self.files: dict[str, tuple[bytes, str]] = {"reply.wav": (wav_bytes(), "audio/wav"),
                                                     "reply.mp3": (b"ID3\x04" + b"\0" * 200, "audio/mpeg")}
        self.redirects: dict[str, str] = {}
        self.received: list[dict] = []  # every WebSocket message
        self.received_at: list[float] = []  # time.monotonic() as each of `received` arrived (for latencies)
        self.binary: list[bytes] = []  # WebSocket binary messages (audio): must stay empty in text mode
        self.http: list[tuple[str, str, dict | None]] = []  # (method, path, JSON body)
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/websocket", self._ws)
        app.router.add_post("/api/tts_get_url", self._tts_get_url)
        app.router.add_get("/api/tts_proxy/{name}", self._tts_proxy)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        await self._runner.cleanup()

    def runs(self) -> list[dict]:
        return [m for m in self.received if m.get("type") == "assist_pipeline/run"]

    def runs_at(self) -> list[tuple[float, str]]:
        """(time.monotonic() on arrival, the text) of each assist_pipeline/run received."""
        return [(at, m.get("input", {}).get("text", "")) for m, at in zip(self.received, self.received_at)
                if m.get("type") == "assist_pipeline/run"]

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.behaviour == "not_home_assistant":
            return web.Response(status=404, text="404: Not Found")  # a web server, but no Home Assistant
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "auth_required", "ha_version": "2026.11.0"})
        authed = False
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                self.binary.append(msg.data)
                continue
            if msg.type != WSMsgType.TEXT:
                break
            at = time.monotonic()
            obj = json.loads(msg.data)
            self.received.append(obj)
            self.received_at.append(at)
            if not authed:
                if obj.get("type") == "auth" and obj.get("access_token") == TOKEN:
                    authed = True
                    await ws.send_json({"type": "auth_ok", "ha_version": "2026.11.0"})
                else:
                    await ws.send_json({"type": "auth_invalid", "message": "Invalid access token or password"})
                    await ws.close()
                continue
            answer = self._registry_answer(obj)
            if answer is not None:
                await ws.send_json({"id": obj["id"], "type": "result", "success": True, "result": answer})
            elif obj.get("type") == "assist_pipeline/run":
                await self._run(ws, obj, request)
                if ws.closed:
                    break
        return ws

    def _registry_answer(self, obj: dict):
        """The result of a registry or state command (as Home Assistant's websocket_api shapes it), or None."""
        kind = obj.get("type")
        if kind == "config/device_registry/list":
            return self.devices
        if kind == "homeassistant/expose_entity/list":
            return {"exposed_entities": {eid: {"conversation": e.get("exposed", True)}
                                         for eid, e in self.entities.items()}}
        if kind == "get_states":
            return [{"entity_id": eid, "state": "off", "attributes": {"friendly_name": e["name"]}}
                    for eid, e in self.entities.items()]
        if kind == "config/entity_registry/get_entries":
            return {eid: {"entity_id": eid, "name": None, "original_name": e["name"],
                          "aliases": e.get("aliases", []), "disabled_by": None}
                    for eid, e in self.entities.items() if eid in obj.get("entity_ids", [])}
        if kind == "config/area_registry/list":
            return [{"area_id": a["name"].lower().replace(" ", "_"), "name": a["name"],
                     "aliases": a.get("aliases", [])} for a in self.areas]
        return None

    async def _run(self, ws: web.WebSocketResponse, obj: dict, request: web.Request) -> None:
        run_id = obj["id"]

        async def event(kind: str, data: dict) -> None:
            await ws.send_json({"id": run_id, "type": "event", "event": {"type": kind, "data": data}})

        await ws.send_json({"id": run_id, "type": "result", "success": True, "result": None})
        if self.behaviour == "silent_run":
            return
        await event("run-start", {"pipeline": "01J", "language": "en"})
        await event("intent-start", {"engine": "conversation.home_assistant", "intent_input": obj["input"]["text"]})
        if self.behaviour == "close_mid_run":
            await ws.close()
            return
        if self.behaviour == "kill_mid_run":  # Home Assistant's process killed: a reset, no close frame
            self.behaviour = "normal"  # and when it is back, it answers
            request.transport.abort()
            return
        if self.behaviour == "not_json":
            await ws.send_str("<html>Bad Gateway</html>")
            return
        if self.behaviour == "pipeline_error":
            await event("error", {"code": "intent-failed", "message": "Unexpected error during intent recognition"})
            return
        await event("intent-end", {"intent_output": {"response": {"speech": {"plain": {"speech": self.speech}}},
                                                     "conversation_id": "01JC"}})
        if self.tts != "none":
            await event("tts-start", {"engine": "tts.piper", "language": "en_US", "voice": "amy",
                                      "tts_input": self.speech})
            name = {"wav": "reply.wav", "mp3": "reply.mp3"}.get(self.tts, self.tts)
            url = name if "://" in name else f"/api/tts_proxy/{name}"
            mime = self.files.get(name, (b"", "audio/wav"))[1]
            await event("tts-end", {"tts_output": {"media_id": "media-source://tts/x", "url": url, "mime_type": mime}})
        await event("run-end", {})

    async def _tts_get_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.http.append(("POST", request.path, body))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"message": "unauthorized"}, status=401)
        if body.get("options", {}).get("preferred_format") != "wav":
            return web.json_response({"url": f"{self.url}/api/tts_proxy/reply.mp3", "path": "/api/tts_proxy/reply.mp3"})
        return web.json_response({"url": f"{self.url}/api/tts_proxy/reply.wav", "path": "/api/tts_proxy/reply.wav"})

    async def _tts_proxy(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.http.append(("GET", request.path, None))
        if name in self.redirects:
            raise web.HTTPFound(self.redirects[name])
        if name not in self.files:
            return web.Response(status=404)
        data, mime = self.files[name]
        return web.Response(body=data, content_type=mime)


class GarbagePeer:
    """A TCP server on 127.0.0.1 that answers anything with bytes that are no HTTP at all."""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"\x16\x03\x01 this is no web server \xff\xfe\r\n\r\n")
        await writer.drain()
        writer.close()

    async def close(self) -> None:
        self.server.close()


class SlowPeer:
    """Accepts and then says nothing, ever (a half-open Home Assistant, or one that hangs)."""

    async def start(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        while await reader.read(1024):
            pass

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        self.server.close()
