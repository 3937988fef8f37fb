"use strict";
// The try-it page of jwtapi. No framework and no build step: the server inlines this
// script, and its Content-Security-Policy admits it by its SHA-256 hash alone.
(() => {
  const cookieMode = document.body.dataset.cookieTokens === "true";
  // With header tokens, the page holds them here, in memory only: never in the browser's
  // web storage, and gone when the page closes. With cookie tokens, the browser
  // holds them in httpOnly cookies this script cannot read; it keeps only the last access
  // token's decoded form to show.
  let accessToken = null;
  let refreshToken = null;
  const byId = (id) => document.getElementById(id);

  function csrfToken() {
    for (const part of document.cookie.split(";")) {
      const [name, ...rest] = part.trim().split("=");
      if (name === "__Host-jwtapi_csrf") return rest.join("=");
    }
    return "";
  }

  function basic(username, password) {
    const bytes = new TextEncoder().encode(`${username}:${password}`);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return `Basic ${btoa(binary)}`;
  }

  function decodeSegment(segment) {
    const base64 = segment.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  function showToken(token) {
    const header = byId("token-header");
    const claims = byId("token-claims");
    const times = byId("token-times");
    times.textContent = "";
    if (!token) {
      header.textContent = claims.textContent = "none";
      return;
    }
    try {
      const [h, c] = token.split(".");
      header.textContent = JSON.stringify(decodeSegment(h), null, 2);
      const decoded = decodeSegment(c);
      claims.textContent = JSON.stringify(decoded, null, 2);
      const when = (seconds) => new Date(seconds * 1000).toLocaleString();
      if (typeof decoded.iat === "number" && typeof decoded.exp === "number") {
        times.textContent = `Issued ${when(decoded.iat)}; expires ${when(decoded.exp)}.`;
      }
    } catch (error) {
      header.textContent = claims.textContent = "not a decodable JWT";
    }
  }

  // Tokens are shown shortened: a screen, a screenshot or a screen share is no place for one.
  function redacted(body) {
    if (!body || typeof body !== "object") return body;
    const copy = { ...body };
    for (const name of ["access_token", "refresh_token"]) {
      if (typeof copy[name] === "string") {
        copy[name] = `${copy[name].slice(0, 12)}... (${copy[name].length} characters)`;
      }
    }
    return copy;
  }

  // One request at a time: two refreshes at once would present one refresh token twice,
  // which the server must take for reuse (and end the login).
  let busy = false;
  const REQUEST_TIMEOUT_MS = 30000;

  async function call(method, path, authorization, form) {
    if (busy) return { status: 0, body: null };
    busy = true;
    for (const button of document.querySelectorAll("button")) button.disabled = true;
    try {
      return await send(method, path, authorization, form);
    } finally {
      busy = false;
      for (const button of document.querySelectorAll("button")) button.disabled = false;
    }
  }

  // Every request says it comes from this script: a wrong login is then challenged with
  // `Form`, not `Basic`, so the browser opens no credentials prompt of its own (which would
  // leave the fetch pending, and the page frozen) and the page gets the 401 itself.
  // A `form` (an object) is sent as application/x-www-form-urlencoded, the body of the
  // OAuth 2.0 endpoints.
  async function send(method, path, authorization, form) {
    const headers = { Accept: "application/json", "X-Requested-With": "XMLHttpRequest" };
    if (authorization) headers.Authorization = authorization;
    if (cookieMode && method !== "GET") headers["X-CSRF-Token"] = csrfToken();
    const status = byId("status");
    const output = byId("response");
    let response;
    let text;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: form ? new URLSearchParams(form) : undefined,
        credentials: "same-origin",
        cache: "no-store",
        // Whatever else keeps an answer away (a prompt from a proxy's own challenge, a
        // server that hangs), the page gets its buttons back.
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      text = await response.text();
    } catch (error) {
      status.textContent = `${method} ${path}: no answer (${error.message})`;
      status.className = "status error";
      output.textContent = "";
      return { status: 0, body: null };
    }
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (error) {
      body = text;
    }
    status.textContent = `${method} ${path} \u2192 ${response.status} ${response.statusText}`;
    status.className = response.ok ? "status ok" : "status error";
    output.textContent = body === null ? "(no body)" : JSON.stringify(redacted(body), null, 2);
    return { status: response.status, body };
  }

  function tookTokens(result) {
    if (result.status !== 200 || !result.body) return;
    accessToken = cookieMode ? null : result.body.access_token;
    refreshToken = cookieMode ? null : result.body.refresh_token;
    showToken(result.body.access_token);
    const claims = decodeSegment(result.body.access_token.split(".")[1]);
    byId("who").textContent = `Logged in as ${claims.sub} (scope: ${claims.scope || "none"}).`;
  }

  const bearer = (token) => (token ? `Bearer ${token}` : null);

  // Whether the access token's exp has passed, by this browser's clock (a wrong clock is
  // caught by the server's 401, below).
  function expired(token) {
    try {
      const exp = decodeSegment(token.split(".")[1]).exp;
      return typeof exp === "number" && exp * 1000 <= Date.now();
    } catch (error) {
      return true;
    }
  }

  function loggedOut() {
    accessToken = refreshToken = null;
    showToken(null);
    byId("who").textContent = "Logged out.";
  }

  // RFC 7009: revoking the refresh token ends its whole login, access tokens included.
  async function revoke() {
    const result = await call("POST", "/revoke", null, {
      token: refreshToken || "",
      token_type_hint: "refresh_token",
    });
    if (result.status === 200) loggedOut();
    return result;
  }

  // The endpoints that take a raw token in their body need header tokens: with cookie
  // tokens the script never sees one.
  if (cookieMode) {
    for (const element of document.querySelectorAll(".header-only")) element.hidden = true;
    byId("cookie-note").hidden = false;
  }

  // After a reload, the cookies may still hold a login this page did not make.
  if (cookieMode && csrfToken()) {
    byId("who").textContent = "A login is kept in this browser's cookies: call a route to use it.";
  }

  byId("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = byId("username").value;
    const password = byId("password").value;
    byId("password").value = "";
    const result =
      !cookieMode && byId("login-via").value === "token"
        ? await call("POST", "/token", null, { grant_type: "password", username, password })
        : await call("POST", "/login", basic(username, password));
    tookTokens(result);
    // Refused or unanswered (the status line says which): ready for the next try at once.
    if (result.status !== 200) byId("password").focus();
  });
  byId("call-protected").addEventListener("click", () => call("GET", "/protected", bearer(accessToken)));
  byId("call-admin").addEventListener("click", () => call("GET", "/protected/admin", bearer(accessToken)));
  byId("call-refresh").addEventListener("click", async () => {
    tookTokens(await call("POST", "/refresh", bearer(refreshToken)));
  });
  // Log out: /logout takes a live access token (with cookie tokens, the refresh cookie
  // too). Once the access token has expired, the refresh token still ends the login, at
  // /revoke: no refresh first just to log out.
  byId("call-logout").addEventListener("click", async () => {
    if (!cookieMode && refreshToken && (!accessToken || expired(accessToken))) {
      await revoke();
      return;
    }
    const result = await call("POST", "/logout", bearer(accessToken));
    if (result.status === 204) loggedOut();
    else if (result.status === 401 && !cookieMode && refreshToken) await revoke();
  });
  byId("call-token-refresh").addEventListener("click", async () => {
    tookTokens(
      await call("POST", "/token", null, { grant_type: "refresh_token", refresh_token: refreshToken || "" }),
    );
  });
  byId("call-revoke").addEventListener("click", revoke);
  // A resource server's question about a token; here, the page's own access token asks
  // about itself, so it needs scope introspect (else the 403 shows what is missing).
  byId("call-introspect").addEventListener("click", () =>
    call("POST", "/introspect", bearer(accessToken), { token: accessToken || "" }),
  );
  byId("call-verify").addEventListener("click", () => call("GET", "/verify", bearer(accessToken)));
  byId("call-metadata").addEventListener("click", () =>
    call("GET", "/.well-known/oauth-authorization-server"),
  );
})();
