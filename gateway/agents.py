"""Agent endpoints: the agent protocol (docs/agent-protocol.md) over any :class:`Channel`.

An agent logs in, becomes available, receives offers, accepts or rejects
them, works its sessions (downlink commands to the vehicle, live positions)
and completes them. The ACD decides; this module translates messages into
engine calls and engine events into messages.

Connection loss is not logout. A dropped agent keeps its sessions for
``[sessions] agent_grace_s`` (the engine's disconnect grace): reconnecting in
time gives them back with ``login_ok``; after it they are re-queued with their
original arrival. A second login of the same agent replaces the first
connection (the newest desk wins, as with terminals).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from protocols.agentwire import AGENT_MESSAGES, COMMANDS, BadMessage, check_client_message

from .channels import Channel, first_message, refuse
from .downlink import PARAMS

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("telacd.agents")


class AgentHub:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.channels: dict[str, Channel] = {}

    def push(self, agent_id: str, msg: dict[str, Any]) -> bool:
        """Send to a connected agent; False if it is not connected."""
        ch = self.channels.get(agent_id)
        if ch is None or ch.closed:
            return False
        ch.send(msg)
        return True

    def state_changed(self, e: Any) -> None:
        self.push(e.agent_id, {"type": "state", "state": e.new, "previous": e.old, "reason": e.reason})
        self.gw.spawn(
            self.gw.store.agent_events([(e.agent_id, self.gw.routing.wall(e.at), e.old, e.new, e.reason)]),
            "agent event",
        )

    def wrapup_ended(self, e: Any) -> None:
        self.push(e.agent_id, {"type": "wrapup_ended", "reason": e.reason})

    async def serve(self, channel: Channel) -> None:
        gw = self.gw
        first = await first_message(channel, AGENT_MESSAGES, "login")
        if first is None:
            return
        agent_id = first["agent"]
        spec = gw.agent_specs.get(agent_id)
        if spec is None or spec.token != first["token"]:
            await refuse(channel, "auth", "unknown agent or wrong token")
            return
        state = first.get("state") or "available"
        if state not in ("available", "break"):
            channel.send(
                {"type": "error", "code": "bad_message", "message": "login state must be available or break"}
            )
            await channel.flush_and_close()
            return
        old = self.channels.get(agent_id)
        self.channels[agent_id] = channel
        if old is not None and not old.closed:
            old.send({"type": "error", "code": "replaced", "message": "logged in elsewhere"})
            old.close()
        gw.metrics.agent_connections += 1
        info = gw.routing.router.agent_info(agent_id, gw.routing.now())
        reply = {"type": "login_ok", "agent": agent_id, "sessions": self._sessions_of(agent_id)}
        if "id" in first:
            reply["id"] = first["id"]
        channel.send(reply)
        logged_out = False
        try:
            gw.routing.login(agent_id, state, first.get("reason", "") if state == "break" else "")
            if info["state"] == "disconnected":
                log.info("agent %s reconnected within its grace period", agent_id)
            while True:
                msg = await channel.recv()
                if msg is None:
                    break
                try:
                    if isinstance(msg, BadMessage):
                        raise msg
                    check_client_message(msg, AGENT_MESSAGES)
                    done = self._handle(agent_id, channel, msg)
                except BadMessage as e:
                    channel.send(e.to_message())
                    continue
                if done:
                    logged_out = True
                    break
        finally:
            gw.metrics.agent_connections -= 1
            if self.channels.get(agent_id) is channel:
                del self.channels[agent_id]
                if not logged_out:
                    try:
                        gw.routing.disconnect(agent_id, gw.cfg.sessions["agent_grace_s"])
                    except (KeyError, ValueError) as e:
                        log.warning("disconnect of %s: %s", agent_id, e)
            await channel.flush_and_close()  # the last words (logged_out, replaced) reach the agent

    def _sessions_of(self, agent_id: str) -> list[dict[str, Any]]:
        return [s.summary() for s in self.gw.sessions.open.values() if s.agent == agent_id]

    def _handle(self, agent_id: str, channel: Channel, msg: dict[str, Any]) -> bool:
        """One message from a logged-in agent. Returns True after a logout."""
        gw = self.gw
        mtype = msg["type"]
        ref = msg.get("id")
        if mtype == "ping":
            channel.send({"type": "pong", **({"id": ref} if ref is not None else {})})
        elif mtype == "login":
            raise BadMessage("bad_message", "already logged in", ref=ref)
        elif mtype == "state":
            state = msg["state"]
            if state == "logout":
                gw.routing.logout(agent_id, msg.get("reason") or "logout")
                channel.send({"type": "logged_out"})
                return True
            if state not in ("available", "break"):
                raise BadMessage("bad_message", "state must be available, break or logout", ref=ref)
            try:
                gw.routing.set_state(agent_id, state, msg.get("reason") or "")
            except ValueError as e:
                raise BadMessage("bad_state", str(e), ref=ref) from None
        elif mtype == "accept":
            offer = str(msg["offer"])
            if not self._owns_offer(agent_id, offer):
                raise BadMessage(
                    "unknown_offer",
                    f"offer {offer!r} is not pending for you (expired or withdrawn)",
                    ref=offer,
                )
            try:
                gw.routing.accept(int(offer))
            except KeyError:
                raise BadMessage(
                    "unknown_offer", f"offer {offer!r} is no longer pending", ref=offer
                ) from None
        elif mtype == "reject":
            offer = str(msg["offer"])
            if not self._owns_offer(agent_id, offer):
                raise BadMessage("unknown_offer", f"offer {offer!r} is not pending for you", ref=offer)
            try:
                gw.routing.reject(int(offer))
            except KeyError:
                raise BadMessage(
                    "unknown_offer", f"offer {offer!r} is no longer pending", ref=offer
                ) from None
        elif mtype == "complete":
            sid = msg["session"]
            try:
                gw.sessions.complete(sid, agent_id, msg.get("disposition"))
            except LookupError as e:
                raise BadMessage("unknown_session", str(e), ref=sid) from None
            except PermissionError as e:
                raise BadMessage("not_yours", str(e), ref=sid) from None
            channel.send({"type": "completed", "session": sid, **({"id": ref} if ref is not None else {})})
        elif mtype == "command":
            self._command(agent_id, channel, msg)
        return False

    def _owns_offer(self, agent_id: str, offer: str) -> bool:
        return any(s.offers.get(offer) == agent_id for s in self.gw.sessions.open.values())

    def _command(self, agent_id: str, channel: Channel, msg: dict[str, Any]) -> None:
        gw = self.gw
        sid = msg["session"]
        ref = msg.get("id")
        s = gw.sessions.open.get(sid)
        if s is None:
            raise BadMessage(
                "unknown_session", f"no open session {sid!r}", ref=ref if ref is not None else sid
            )
        if s.agent != agent_id:
            raise BadMessage(
                "not_yours", f"session {sid} is not assigned to you", ref=ref if ref is not None else sid
            )
        if not s.phone:
            raise BadMessage("no_vehicle", f"session {sid} has no vehicle to command", ref=ref)
        command = msg["command"]
        if command not in COMMANDS:
            raise BadMessage(
                "bad_command", f"unknown command {command!r} (known: {', '.join(COMMANDS)})", ref=ref
            )
        known = (*PARAMS[command], "expires_in_s")
        params = {k: v for k, v in msg.items() if k in known}  # unknown fields are ignored
        if "monitor" in params:
            params["monitor"] = bool(params["monitor"])
        if command == "callback" and not params.get("phone"):
            spec = gw.agent_specs.get(agent_id)
            if spec is None or not spec.phone:
                raise BadMessage(
                    "bad_command", "callback needs 'phone' (or a phone in the agent's configuration)", ref=ref
                )
            params["phone"] = spec.phone
        try:
            gw.downlink.check(command, params)
        except ValueError as e:
            raise BadMessage("bad_command", str(e), ref=ref) from None

        async def run() -> None:
            def progress(update: dict[str, Any]) -> None:
                out = {"type": "command_result", "session": sid, "command": command, **update}
                if ref is not None:
                    out["id"] = ref
                self.push(agent_id, out)

            try:
                await gw.downlink.request(
                    s.phone, command, params, session=s, agent=agent_id, progress=progress
                )
            except Exception as e:  # e.g. the store refused to queue it: the agent must still hear
                log.error("command %s for %s failed: %r", command, sid, e)
                progress({"ok": False, "status": "failed", "error": f"the command could not be sent: {e}"})

        gw.spawn(run(), f"command {command} for {sid}")
