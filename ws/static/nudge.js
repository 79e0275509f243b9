/*
 * Nudge browser SDK: one websocket to the Nudge gateway that sends track events and shows the messages Nudge pushes.
 *
 *   const client = Nudge.connect({
 *     getToken: async () => (await (await fetch("/my-backend/nudge-token")).json()).token,
 *     onStatus: (state) => console.log(state),    // "connecting" | "open" | "closed"
 *     onMessage: (message) => console.log(message), // {id, payload}, after the pop-up is shown
 *   });
 *   client.track("Product Viewed", {product_id: "sku-1001", price: 89});
 *   client.consent({marketing: false});            // the shopper's choice, per purpose
 *   client.close();
 *
 * Wire protocol (JSON text frames), see ws/protocol.py:
 *   browser -> server  {"type":"track","event","properties","messageId","timestamp"}, {"type":"ack","id"},
 *                      {"type":"consent","categoryPreferences":{"marketing":false}},
 *                      {"type":"ping"}
 *   server -> browser  {"type":"message","id","payload":{"title","body","consent",...}}, {"type":"stored","id"},
 *                      {"type":"withdrawn","purposes":["marketing"]}, {"type":"pong"}
 *
 * "withdrawn": the shopper withdrew consent for those purposes (in this tab, another one, or through the shop's
 * backend). The SDK takes the pop-ups of those purposes off the screen (and those whose payload names no purpose)
 * and does not ack them; pop-ups of the other purposes stay.
 *
 * Delivery is at least once: the same message id may arrive again (another tab, a reconnect, a gateway restart).
 * The SDK shows each id once and acks every copy, so the server can forget it.
 *
 * Track and consent events are at least once too: each is kept until the server says it is stored ("stored" with
 * its messageId) and sent again on the next connection if the socket closes first (a gateway that died with it
 * in its buffer). The server skips a second copy by its messageId. Track events wait in a bounded queue; the
 * latest consent statement waits apart, in localStorage, where no number of track events can push it out and
 * where the other tabs of this origin see it and send it too (a tab refused for one tab too many, or closed).
 *
 * Plain ES2017, no dependencies, no build step: load it with <script src="/nudge.js"></script>.
 */
(function (global) {
  "use strict";

  // Captured now: document.currentScript is only set while this file is being executed.
  const scriptSrc = document.currentScript ? document.currentScript.src : "";

  const RECONNECT_BASE_MS = 500;
  const RECONNECT_CAP_MS = 30000;
  // A connection that stayed open this long was healthy: the next failure starts backing off from scratch.
  const STABLE_AFTER_MS = 5000;
  const PING_EVERY_MS = 25000;
  // No frame at all (not even a pong) for this long means the socket is dead without the browser noticing yet.
  const SILENCE_LIMIT_MS = PING_EVERY_MS + 10000;

  // The server allows ~20 frames/s with a burst of 40 per connection and closes the socket (4008) beyond that.
  // Staying under it leaves room for acks and pings when a full queue is flushed on open.
  const SEND_RATE_PER_S = 15;
  const SEND_BURST = 30;

  const MAX_QUEUED_TRACKS = 100;
  const MAX_FRAME_BYTES = 16384; // the server closes with 1009 beyond this
  const MAX_EVENT_NAME_LENGTH = 200;
  const MAX_VISIBLE_POPUPS = 5;
  const PURPOSES = ["analytics", "personalization", "marketing"]; // models/consent.py

  const SEEN_STORAGE_KEY = "nudge.seen";
  const MAX_SEEN_IDS = 200;
  const CONSENT_STORAGE_KEY = "nudge.consent";

  // Close codes after which reconnecting immediately would only repeat the problem: log them, then back off.
  const WARN_CLOSE_CODES = {
    1003: "binary frame refused",
    1009: "frame too big",
    4000: "malformed frame",
    4008: "rate limited",
    4009: "too many connections for this user",
  };

  function defaultUrl() {
    const origin = new URL(scriptSrc || global.location.href);
    const scheme = origin.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + origin.host + "/v1/ws";
  }

  function newMessageId() {
    const crypto = global.crypto;
    // randomUUID exists only in secure contexts (https, localhost); getRandomValues exists everywhere.
    if (crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    if (crypto && typeof crypto.getRandomValues === "function") {
      crypto.getRandomValues(bytes);
    } else {
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function byteLength(text) {
    return new TextEncoder().encode(text).length;
  }

  // -- message ids already shown, shared by the tabs of this origin ---------------------------------------------

  // Storage may be missing, full or forbidden (private mode, sandboxed iframes): the in-memory copy then suffices.
  function readStoredSeen() {
    try {
      const ids = JSON.parse(global.localStorage.getItem(SEEN_STORAGE_KEY) || "[]");
      return Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : [];
    } catch (_) {
      return [];
    }
  }

  function writeStoredSeen(ids) {
    try {
      global.localStorage.setItem(SEEN_STORAGE_KEY, JSON.stringify(ids));
    } catch (_) {
      /* storage unavailable: keep the in-memory set only */
    }
  }

  function createSeenIds() {
    let ids = new Set(readStoredSeen());
    return {
      // Re-read storage each time, so a message another tab showed a moment ago is not shown here again.
      has(id) {
        for (const stored of readStoredSeen()) ids.add(stored);
        return ids.has(id);
      },
      add(id) {
        ids.add(id);
        const newest = Array.from(ids).slice(-MAX_SEEN_IDS);
        ids = new Set(newest);
        writeStoredSeen(newest);
      },
    };
  }

  // -- the consent statement not yet stored by the server, shared by the tabs of this origin -----------------------

  // {id, preferences, user}: `user` is the user part of the token it was sent with (null before any token), so a
  // statement left behind by one shopper is never sent on another shopper's connection on a shared browser.
  function readStoredConsent() {
    try {
      return parseConsent(global.localStorage.getItem(CONSENT_STORAGE_KEY));
    } catch (_) {
      return null;
    }
  }

  function parseConsent(text) {
    let statement;
    try {
      statement = JSON.parse(text || "null");
    } catch (_) {
      return null;
    }
    if (!statement || typeof statement.id !== "string" || !statement.id) return null;
    if (statement.user !== null && typeof statement.user !== "string") return null;
    const preferences = statement.preferences;
    if (!preferences || typeof preferences !== "object") return null;
    for (const purpose of Object.keys(preferences)) {
      if (PURPOSES.indexOf(purpose) < 0 || typeof preferences[purpose] !== "boolean") return null;
    }
    return { id: statement.id, preferences: preferences, user: statement.user };
  }

  function writeStoredConsent(statement) {
    try {
      if (statement) {
        global.localStorage.setItem(CONSENT_STORAGE_KEY, JSON.stringify(statement));
      } else {
        global.localStorage.removeItem(CONSENT_STORAGE_KEY);
      }
    } catch (_) {
      /* storage unavailable: this tab still holds the statement until the server stores it */
    }
  }

  // The user a v1 token (ws/tokens.py: "v1.<base64url user>.<expiry>.<signature>") is for; null for any other token.
  function tokenUser(token) {
    const parts = token.split(".");
    return parts.length === 4 && parts[0] === "v1" ? parts[1] : null;
  }

  // -- pop-ups ---------------------------------------------------------------------------------------------------

  const STYLE_ID = "nudge-default-style";
  const DEFAULT_CSS = `
.nudge-stack {
  position: fixed; right: 16px; bottom: 16px; z-index: 2147483000;
  display: flex; flex-direction: column; gap: 10px; align-items: flex-end;
  max-width: calc(100vw - 32px); pointer-events: none;
}
.nudge-popup {
  pointer-events: auto; position: relative; box-sizing: border-box; width: 340px; max-width: 100%;
  padding: 14px 44px 14px 16px; border-radius: 10px; border-left: 4px solid #2f6fed;
  background: #ffffff; color: #1b1f24; box-shadow: 0 6px 24px rgba(15, 23, 42, 0.18);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  animation: nudge-in 160ms ease-out;
}
.nudge-popup-title { margin: 0 0 4px; font-size: 15px; font-weight: 650; line-height: 1.3; }
.nudge-popup-body { margin: 0; color: #3b4350; }
.nudge-popup-close {
  position: absolute; top: 8px; right: 8px; width: 28px; height: 28px; padding: 0;
  border: 0; border-radius: 6px; background: transparent; color: #3b4350;
  font-size: 20px; line-height: 28px; cursor: pointer;
}
.nudge-popup-close:hover { background: #eef1f5; color: #1b1f24; }
.nudge-popup-close:focus-visible { outline: 2px solid #2f6fed; outline-offset: 1px; }
@keyframes nudge-in { from { opacity: 0; transform: translateY(8px); } }
@media (prefers-reduced-motion: reduce) { .nudge-popup { animation: none; } }
`;

  function injectDefaultStyle() {
    if (document.getElementById(STYLE_ID)) return;
    const style = document.createElement("style");
    style.id = STYLE_ID;
    style.textContent = DEFAULT_CSS;
    // First in <head>, so the page's own stylesheet can override any rule.
    document.head.insertBefore(style, document.head.firstChild);
  }

  let popupCounter = 0;
  const openPopups = []; // oldest first, across clients: Escape dismisses the last one

  function dismissPopup(popup) {
    const index = openPopups.findIndex((entry) => entry.element === popup);
    if (index === -1) return;
    const [entry] = openPopups.splice(index, 1);
    const hadFocus = popup.contains(document.activeElement);
    popup.remove();
    // Give focus back to where the shopper was, rather than dropping it on <body>.
    if (hadFocus && entry.returnFocus && entry.returnFocus.isConnected) {
      entry.returnFocus.focus({ preventScroll: true });
    }
  }

  function onKeydown(event) {
    if (event.key !== "Escape" || event.defaultPrevented || openPopups.length === 0) return;
    dismissPopup(openPopups[openPopups.length - 1].element);
  }

  function showPopup(container, id, payload) {
    const title = typeof payload.title === "string" ? payload.title : "";
    const body = typeof payload.body === "string" ? payload.body : "";
    if (!title && !body) return null;

    injectDefaultStyle();
    let stack = container.querySelector(":scope > .nudge-stack");
    if (!stack) {
      stack = document.createElement("div");
      stack.className = "nudge-stack";
      container.appendChild(stack);
    }

    const n = ++popupCounter;
    const popup = document.createElement("div");
    popup.className = "nudge-popup";
    popup.setAttribute("role", "dialog");
    popup.setAttribute("aria-modal", "false");
    popup.setAttribute("aria-labelledby", "nudge-popup-title-" + n);
    popup.dataset.messageId = id;
    if (typeof payload.trigger === "string") popup.dataset.trigger = payload.trigger;
    if (typeof payload.consent === "string") popup.dataset.consent = payload.consent;

    // textContent only: payload text is data, never markup.
    const heading = document.createElement("h2");
    heading.className = "nudge-popup-title";
    heading.id = "nudge-popup-title-" + n;
    heading.textContent = title;
    popup.appendChild(heading);

    if (body) {
      const paragraph = document.createElement("p");
      paragraph.className = "nudge-popup-body";
      paragraph.id = "nudge-popup-body-" + n;
      paragraph.textContent = body;
      popup.appendChild(paragraph);
      popup.setAttribute("aria-describedby", paragraph.id);
    }

    const close = document.createElement("button");
    close.type = "button";
    close.className = "nudge-popup-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    close.addEventListener("click", () => dismissPopup(popup));
    popup.appendChild(close);

    openPopups.push({ element: popup, returnFocus: document.activeElement });
    stack.appendChild(popup);
    while (openPopups.length > MAX_VISIBLE_POPUPS) dismissPopup(openPopups[0].element);
    close.focus({ preventScroll: true });
    return popup;
  }

  // -- the client ------------------------------------------------------------------------------------------------

  /**
   * Open a connection to Nudge and keep it open until client.close().
   *
   * options.getToken (required): async () => token string. Called before every connection attempt, so it must
   *   return a fresh token each time (tokens are short-lived; the shop's backend mints them).
   * options.url: websocket URL without the token; defaults to ws(s)://<host of this script>/v1/ws.
   * options.onMessage(message): called with {id, payload} after a new message is shown and acked.
   * options.onStatus(state): called on every change of client.state: "connecting" | "open" | "closed".
   * options.container: element the pop-ups go into; defaults to document.body.
   */
  function connect(options) {
    const opts = options || {};
    if (typeof opts.getToken !== "function") throw new TypeError("Nudge.connect needs a getToken function");
    const url = opts.url || defaultUrl();
    const container = opts.container || document.body;
    const seen = createSeenIds();

    let state = "closed";
    let socket = null;
    let stopped = false;
    let attempt = 0; // consecutive failed connections, for the backoff
    let openedAt = 0;
    let lastReceivedAt = 0;
    let reconnectTimer = null;
    let pingTimer = null;
    let pumpTimer = null;

    // Track frames ({id, text}) wait here while disconnected, and go back here, oldest first, if the socket closes
    // before the server said they were stored. Acks and pings belong to one connection: a new connection gets
    // unacked messages replayed and acks them again, so those are dropped when the socket closes.
    let queuedTracks = [];
    const unconfirmed = new Map(); // messageId -> frame text: sent, not yet stored
    let connectionFrames = [];
    let sendTokens = SEND_BURST;
    let tokensRefilledAt = 0;

    // The latest consent statement until the server stores it; it goes out first on every connection, and is never
    // queued among track events, so none can evict it. The worker folds a user's events in the order they arrive
    // and judges each by the consent stated before it (tables/profile.py), so the statement must precede every track
    // event made after it: sending it first guarantees that. Track events made before it and still queued are then
    // judged by it too. That is the shopper's intent: a withdrawal also covers events Nudge has not used yet, and a
    // grant covers only events Nudge receives after the shopper agreed.
    let pendingConsent = readStoredConsent();
    let consentSentOn = null; // the socket the pending statement was last sent on
    let connectedUser = null; // tokenUser() of the token of the latest connection attempt

    // Make `items` the frames waiting to be sent, keeping the newest MAX_QUEUED_TRACKS.
    function queue(items) {
      queuedTracks = items.length > MAX_QUEUED_TRACKS ? items.slice(-MAX_QUEUED_TRACKS) : items;
    }

    function setState(next) {
      if (state === next) return;
      state = next;
      if (opts.onStatus) {
        try {
          opts.onStatus(next);
        } catch (error) {
          console.error("Nudge: onStatus threw", error);
        }
      }
    }

    async function open() {
      reconnectTimer = null;
      setState("connecting");
      let token;
      try {
        token = await opts.getToken();
        if (typeof token !== "string" || !token) throw new Error("getToken did not return a token string");
      } catch (error) {
        console.warn("Nudge: could not get a token", error);
        if (!stopped) connectionLost();
        return;
      }
      if (stopped) return;
      connectedUser = tokenUser(token);
      const separator = url.indexOf("?") === -1 ? "?" : "&";
      const ws = new WebSocket(url + separator + "token=" + encodeURIComponent(token));
      socket = ws;
      // Every handler checks it still belongs to the current socket: a replaced socket may fire late events.
      ws.onopen = () => {
        if (ws !== socket) return;
        openedAt = lastReceivedAt = Date.now();
        sendTokens = SEND_BURST; // the server's bucket starts full on every connection
        tokensRefilledAt = openedAt;
        setState("open");
        pingTimer = setInterval(keepAlive, PING_EVERY_MS);
        pump();
      };
      ws.onmessage = (event) => {
        if (ws !== socket) return;
        lastReceivedAt = Date.now();
        receive(event.data);
      };
      ws.onclose = (event) => {
        if (ws !== socket) return;
        // A refused handshake (bad or expired token) shows up here as 1006 without ever opening.
        const code = event.code;
        if (WARN_CLOSE_CODES[code]) {
          console.warn("Nudge: connection closed with " + code + " (" + (event.reason || WARN_CLOSE_CODES[code]) + ")");
        }
        connectionLost();
      };
      // onerror carries no detail in browsers; onclose always follows it.
    }

    function connectionLost() {
      if (openedAt > 0 && Date.now() - openedAt >= STABLE_AFTER_MS) attempt = 0;
      dropSocket();
      setState("closed");
      if (stopped) return;
      // Exponential backoff with full jitter, so many tabs dropped at once by a restart do not return in lockstep.
      const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** attempt);
      attempt += 1;
      reconnectTimer = setTimeout(open, Math.random() * ceiling);
    }

    function dropSocket() {
      clearInterval(pingTimer);
      clearTimeout(pumpTimer);
      pingTimer = pumpTimer = null;
      connectionFrames = [];
      consentSentOn = null;
      openedAt = 0;
      if (unconfirmed.size) {
        const resend = Array.from(unconfirmed, ([id, text]) => ({ id: id, text: text }));
        unconfirmed.clear();
        queue(resend.concat(queuedTracks));
      }
      if (socket) {
        const ws = socket;
        socket = null;
        ws.onopen = ws.onmessage = ws.onclose = null;
        if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000);
      }
    }

    function keepAlive() {
      if (Date.now() - lastReceivedAt > SILENCE_LIMIT_MS) {
        // Our last ping went unanswered: the network path is gone even though no close event came.
        console.warn("Nudge: no reply from the server, reconnecting");
        connectionLost();
        return;
      }
      connectionFrames.push(JSON.stringify({ type: "ping" }));
      pump();
    }

    function consentDue() {
      if (!pendingConsent || consentSentOn === socket) return false;
      return pendingConsent.user === null || pendingConsent.user === connectedUser;
    }

    function sendConsent() {
      if (pendingConsent.user === null) {
        pendingConsent = { id: pendingConsent.id, preferences: pendingConsent.preferences, user: connectedUser };
        writeStoredConsent(pendingConsent);
      }
      consentSentOn = socket;
      const { id, preferences } = pendingConsent;
      socket.send(JSON.stringify({ type: "consent", categoryPreferences: preferences, messageId: id }));
    }

    // Another tab stated consent, or had its statement stored: take over the newest, or drop the one now stored.
    // A page clearing all of storage (key null) is not a receipt: this tab keeps its statement then.
    function onStorage(event) {
      if (event.key !== CONSENT_STORAGE_KEY) return;
      const stored = readStoredConsent();
      if (stored) {
        if (!pendingConsent || pendingConsent.id !== stored.id) {
          pendingConsent = stored;
          consentSentOn = null;
          pump();
        }
      } else if (pendingConsent) {
        const removed = parseConsent(event.oldValue);
        if (removed && removed.id === pendingConsent.id) pendingConsent = null;
      }
    }

    // Send what is waiting, the consent statement first, then acks and pings, as fast as the rate limit allows.
    function pump() {
      clearTimeout(pumpTimer);
      pumpTimer = null;
      if (!socket || socket.readyState !== WebSocket.OPEN) return;
      const now = Date.now();
      sendTokens = Math.min(SEND_BURST, sendTokens + ((now - tokensRefilledAt) / 1000) * SEND_RATE_PER_S);
      tokensRefilledAt = now;
      while (sendTokens >= 1 && (consentDue() || connectionFrames.length || queuedTracks.length)) {
        if (consentDue()) {
          sendConsent();
        } else if (connectionFrames.length) {
          socket.send(connectionFrames.shift());
        } else {
          const item = queuedTracks.shift();
          unconfirmed.set(item.id, item.text);
          if (unconfirmed.size > MAX_QUEUED_TRACKS) unconfirmed.delete(unconfirmed.keys().next().value);
          socket.send(item.text);
        }
        sendTokens -= 1;
      }
      if (consentDue() || connectionFrames.length || queuedTracks.length) {
        pumpTimer = setTimeout(pump, Math.ceil(((1 - sendTokens) / SEND_RATE_PER_S) * 1000));
      }
    }

    // The shopper withdrew consent for `purposes`: take this client's pop-ups of those purposes back, as the server
    // took back those not shown yet. One that names no purpose may need any of them: it goes too.
    function withdraw(purposes) {
      if (!Array.isArray(purposes)) return;
      const withdrawn = new Set();
      for (const entry of openPopups.slice()) {
        const popup = entry.element;
        const purpose = popup.dataset.consent;
        if (!container.contains(popup) || (purpose && purposes.indexOf(purpose) < 0)) continue;
        withdrawn.add(JSON.stringify({ type: "ack", id: popup.dataset.messageId }));
        dismissPopup(popup);
      }
      // Its ack may still wait behind the rate limit: it is not to be counted as shown.
      connectionFrames = connectionFrames.filter((frame) => !withdrawn.has(frame));
    }

    function receive(text) {
      let frame;
      try {
        frame = JSON.parse(text);
      } catch (_) {
        console.warn("Nudge: ignoring a frame that is not JSON");
        return;
      }
      if (!frame) return;
      const id = frame.id;
      if (frame.type === "stored") {
        unconfirmed.delete(id);
        if (pendingConsent && id === pendingConsent.id) {
          pendingConsent = null;
          // Only if no tab has stated a newer choice meanwhile.
          const stored = readStoredConsent();
          if (stored && stored.id === id) writeStoredConsent(null);
        }
        return;
      }
      if (frame.type === "withdrawn") {
        withdraw(frame.purposes);
        return;
      }
      if (frame.type !== "message") return; // "pong" needs nothing: any frame refreshes lastReceivedAt
      if (typeof id !== "string" || !id) return;
      const ack = JSON.stringify({ type: "ack", id: id });
      if (seen.has(id)) {
        connectionFrames.push(ack); // shown already (here or in another tab): just let the server forget it
        pump();
        return;
      }
      seen.add(id);
      const payload = frame.payload && typeof frame.payload === "object" ? frame.payload : {};
      try {
        showPopup(container, id, payload);
      } catch (error) {
        console.error("Nudge: could not show message " + id, error);
      }
      connectionFrames.push(ack);
      pump();
      if (opts.onMessage) {
        try {
          opts.onMessage({ id: id, payload: payload });
        } catch (error) {
          console.error("Nudge: onMessage threw", error);
        }
      }
    }

    /**
     * Send a track event; returns its messageId. While disconnected it waits in a queue (the oldest of more than
     * 100 is dropped) and goes out when the connection opens; it is sent again after a reconnect until the server
     * says it is stored. The timestamp is taken now, not when it is sent.
     */
    function track(event, properties) {
      if (typeof event !== "string" || !event.trim() || event.length > MAX_EVENT_NAME_LENGTH) {
        throw new TypeError("Nudge: track needs an event name of 1 to " + MAX_EVENT_NAME_LENGTH + " characters");
      }
      const props = properties === undefined ? {} : properties;
      if (props === null || typeof props !== "object" || Array.isArray(props)) {
        throw new TypeError("Nudge: track properties must be an object");
      }
      const messageId = newMessageId();
      const frame = JSON.stringify({
        type: "track",
        event: event,
        properties: props,
        messageId: messageId,
        timestamp: new Date().toISOString(),
      });
      // The server would close the connection over it; better to lose this one event than the connection.
      if (byteLength(frame) > MAX_FRAME_BYTES) {
        console.warn("Nudge: dropping track event " + JSON.stringify(event) + ": larger than " + MAX_FRAME_BYTES + " bytes");
        return messageId;
      }
      if (stopped) return messageId;
      queue(queuedTracks.concat([{ id: messageId, text: frame }]));
      pump();
      return messageId;
    }

    /**
     * Record the shopper's consent choice, e.g. consent({marketing: false}). Purposes: analytics, personalization,
     * marketing (true or false); the choice applies from now on and is kept with the shopper's events. Until the
     * server stores it, it is kept in localStorage (merged with any earlier choice not stored yet: the latest per
     * purpose wins) and sent first on every connection of any tab of this origin, before any queued track event.
     */
    function consent(preferences) {
      if (preferences === null || typeof preferences !== "object" || Array.isArray(preferences)) {
        throw new TypeError("Nudge: consent needs an object such as {marketing: false}");
      }
      for (const purpose of Object.keys(preferences)) {
        if (PURPOSES.indexOf(purpose) < 0 || typeof preferences[purpose] !== "boolean") {
          throw new TypeError("Nudge: consent purposes are " + PURPOSES.join(", ") + ", each true or false");
        }
      }
      if (stopped) return;
      // The server merges a statement into the user's consent purpose by purpose, so the statement that replaces
      // one not stored yet must carry that one's purposes too: {marketing: false} then {analytics: true} must not
      // lose the withdrawal. Another tab's newer statement (storage) takes precedence over this tab's copy.
      const earlier = readStoredConsent() || pendingConsent;
      const sameUser = earlier && (earlier.user === null || connectedUser === null || earlier.user === connectedUser);
      pendingConsent = {
        id: newMessageId(),
        preferences: Object.assign({}, sameUser ? earlier.preferences : {}, preferences),
        user: sameUser && earlier.user !== null ? earlier.user : connectedUser,
      };
      consentSentOn = null;
      writeStoredConsent(pendingConsent);
      pump();
    }

    /**
     * Close the connection for good: no reconnect, queued track events are dropped. A consent statement not stored
     * yet stays in localStorage for the next connection of this origin. Pop-ups stay until dismissed.
     */
    function close() {
      stopped = true;
      clearTimeout(reconnectTimer);
      reconnectTimer = null;
      global.removeEventListener("storage", onStorage);
      dropSocket();
      queuedTracks = [];
      unconfirmed.clear();
      pendingConsent = null;
      setState("closed");
    }

    global.addEventListener("storage", onStorage);
    open();
    return Object.freeze({
      track: track,
      consent: consent,
      close: close,
      get state() {
        return state;
      },
    });
  }

  document.addEventListener("keydown", onKeydown);
  global.Nudge = Object.freeze({ connect: connect });
})(window);
