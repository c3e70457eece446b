// The h2chat page: joins a room with Subscribe (a server stream over gRPC-Web), posts with Post
// and the member key Subscribe's headers carry, and reconnects with resume. Every text from the
// network is put in the page with textContent, never parsed as HTML.
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ChatService, EventKind, LeaveReason } from "../gen/chat/v1/chat_pb.js";

const client = createClient(ChatService, createGrpcWebTransport({ baseUrl: location.origin }));
const $ = (id) => document.getElementById(id);
/** EVENT_KIND_RESET (room epochs): the room restarted, its numbering with it. */
const EVENT_KIND_RESET = 4;
/** At most this many log lines are kept (in the page and for a reload). */
const MAX_LINES = 500;

let session = null;

/** One joined room: the stream, the key, what was seen (kept across a reload of the tab). */
class Session {
  constructor(room, name) {
    this.room = room;
    this.name = name;
    this.storeKey = `h2chat:${room}:${name}`;
    const saved = JSON.parse(sessionStorage.getItem(this.storeKey) ?? "null");
    this.lastSeq = saved?.lastSeq ?? null;
    this.epoch = saved?.epoch ?? "";
    this.lines = saved?.lines ?? [];
    this.members = new Set();
    this.key = null;
    this.abort = new AbortController();
    this.backoff = 250;
  }

  save() {
    this.lines = this.lines.slice(-MAX_LINES);
    sessionStorage.setItem(this.storeKey, JSON.stringify({ lastSeq: this.lastSeq, epoch: this.epoch, lines: this.lines }));
  }

  /** Subscribes, resuming after the last event seen; reconnects until stopped. */
  async run() {
    for (const line of this.lines) render(line);
    while (!this.abort.signal.aborted) {
      try {
        await this.subscribeOnce();
        this.notice("The server ended the stream; reconnecting.");
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.notice(`Disconnected (${err.message}); reconnecting.`);
      }
      setSendable(false);
      await new Promise((r) => setTimeout(r, this.backoff));
      this.backoff = Math.min(this.backoff * 2, 5000);
    }
  }

  async subscribeOnce() {
    const request = { roomId: this.room, senderId: this.name };
    if (this.lastSeq !== null) {
      request.resumeAfterSeq = BigInt(this.lastSeq);
      request.resumeEpoch = this.epoch;
    }
    const stream = client.subscribe(request, {
      signal: this.abort.signal,
      onHeader: (headers) => {
        this.key = headers.get("chat-member-key");
        this.epoch = headers.get("chat-epoch") ?? this.epoch;
        setStatus(`Joined ${this.room} as ${this.name}.`);
        setSendable(true);
        this.backoff = 250;
        this.refreshMembers();
      },
    });
    for await (const event of stream) this.receive(event);
  }

  receive(event) {
    const seq = event.seq === 0n ? null : Number(event.seq);
    if (seq !== null && this.lastSeq !== null && seq <= this.lastSeq && event.kind !== EVENT_KIND_RESET) {
      return; // already shown
    }
    const time = event.sentAt ? timestampDate(event.sentAt).toLocaleTimeString() : "";
    switch (event.kind) {
      case EventKind.MESSAGE:
        this.add({ kind: "message", seq, time, sender: event.senderId, text: event.text });
        break;
      case EventKind.JOINED:
        this.members.add(event.senderId);
        this.add({ kind: "presence", seq, time, text: `${event.senderId} joined` });
        break;
      case EventKind.LEFT:
        this.members.delete(event.senderId);
        this.add({ kind: "presence", seq, time, text: `${event.senderId} left (${leaveReason(event.leaveReason)})` });
        break;
      case EventKind.PRESENCE:
        // A large room's batch: the names listed are the first few, so the member list is asked for.
        this.add({ kind: "presence", seq, time, text: presenceText(event) });
        this.refreshMembers();
        break;
      case EventKind.GAP:
        this.add({ kind: "notice", seq: null, time, text: `Missed events ${event.gapFrom}–${event.gapTo}: they fell out of the room's history.` });
        break;
      case EVENT_KIND_RESET:
        this.lastSeq = null;
        this.epoch = event.epoch;
        this.add({ kind: "notice", seq: null, time, text: "The room restarted: its history starts again." });
        break;
      default:
        return;
    }
    if (seq !== null) this.lastSeq = seq;
    this.save();
    renderMembers(this.members);
  }

  add(line) {
    this.lines.push(line);
    render(line);
  }

  notice(text) {
    setStatus(text);
  }

  async refreshMembers() {
    try {
      const res = await client.members({ roomId: this.room }, { signal: this.abort.signal });
      this.members = new Set(res.memberIds);
      renderMembers(this.members);
    } catch {
      // The next join or leave event updates the list anyway.
    }
  }

  async post(text) {
    const res = await client.post({ roomId: this.room, text }, { headers: { "chat-member-key": this.key ?? "" } });
    return res.seq;
  }

  stop() {
    this.abort.abort();
  }
}

// "12 joined: a, b, c … and 9 more; 2 left: d, e" for a batched presence event.
function presenceText(event) {
  const list = (verb, names, count) => {
    const shown = names.slice(0, 3);
    if (count === 1n && shown.length === 1) return `${shown[0]} ${verb}`;
    const more = count - BigInt(shown.length);
    return `${count} ${verb}` + (shown.length ? `: ${shown.join(", ")}` : "") + (more > 0n ? ` … and ${more} more` : "");
  };
  const parts = [];
  if (event.joinedCount > 0n) parts.push(list("joined", event.joinedIds, event.joinedCount));
  if (event.leftCount > 0n) parts.push(list("left", event.leftIds, event.leftCount));
  return parts.join("; ");
}

function leaveReason(reason) {
  switch (reason) {
    case LeaveReason.LEFT: return "left";
    case LeaveReason.DISCONNECTED: return "disconnected";
    case LeaveReason.SERVER_SHUTTING_DOWN: return "server shutting down";
    default: return "gone";
  }
}

/** Appends one log line; every piece of text goes in as textContent. */
function render(line) {
  const li = document.createElement("li");
  li.className = line.kind;
  if (line.seq !== null) li.dataset.seq = String(line.seq);
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = line.time;
  li.append(time);
  if (line.kind === "message") {
    const sender = document.createElement("span");
    sender.className = "sender";
    sender.textContent = line.sender;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = line.text;
    li.append(sender, text);
  } else {
    const text = document.createElement("span");
    text.textContent = line.text;
    li.append(text);
  }
  const log = $("log");
  log.append(li);
  while (log.children.length > MAX_LINES) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

function renderMembers(members) {
  const list = $("members");
  list.replaceChildren(
    ...[...members].sort().map((name) => {
      const li = document.createElement("li");
      li.textContent = name;
      return li;
    }),
  );
}

function setStatus(text) {
  $("status").textContent = text;
}

function setSendable(on) {
  $("text").disabled = !on;
  $("send-button").disabled = !on;
}

function join(room, name) {
  session?.stop();
  $("log").replaceChildren();
  sessionStorage.setItem("h2chat:last", JSON.stringify({ room, name }));
  const url = new URL(location.href);
  url.searchParams.set("room", room);
  url.searchParams.set("name", name);
  history.replaceState(null, "", url);
  setStatus(`Joining ${room}…`);
  session = new Session(room, name);
  session.run();
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  join($("room").value.trim(), $("name").value.trim());
});

$("send").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!text || !session) return;
  try {
    await session.post(text);
    $("text").value = "";
  } catch (err) {
    setStatus(`Not sent: ${err.message}`);
  }
});

// A reload (or a link with ?room=&name=) joins again and resumes where the tab was.
const params = new URLSearchParams(location.search);
const last = JSON.parse(sessionStorage.getItem("h2chat:last") ?? "null");
const room = params.get("room") ?? last?.room;
const name = params.get("name") ?? last?.name;
if (room && name) {
  $("room").value = room;
  $("name").value = name;
  join(room, name);
}
