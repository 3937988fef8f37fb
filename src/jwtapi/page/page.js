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
  // DPoP (RFC 9449): the key pair of the current DPoP login, made by this page for that
  // login, its private half non-extractable; in memory only, like the tokens, and
  // forgotten at logout. Null while the tokens are plain Bearer tokens.
  let dpopKey = null;
  // The server's latest DPoP-Nonce (when it issues them), for the next proof.
  let dpopNonce = null;
  const byId = (id) => document.getElementById(id);
  // WebCrypto exists only in a secure context: https, or http://localhost.
  const canDPoP = window.isSecureContext && Boolean(window.crypto && crypto.subtle);

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

  function base64url(bytes) {
    let binary = "";
    for (const byte of new Uint8Array(bytes)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  const utf8 = (text) => new TextEncoder().encode(text);
  const sha256 = async (text) => base64url(await crypto.subtle.digest("SHA-256", utf8(text)));

  // A P-256 key pair for one DPoP login. Only the public half is ever exported; the private
  // one cannot be (extractable: false), not even by this script.
  async function newDPoPKey() {
    const algorithm = { name: "ECDSA", namedCurve: "P-256" };
    const pair = await crypto.subtle.generateKey(algorithm, false /* extractable */, ["sign"]);
    const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
    // RFC 7638: the required members only, in lexicographic order, without whitespace.
    const thumbprint = await sha256(JSON.stringify({ crv, kty, x, y }));
    return { privateKey: pair.privateKey, jwk: { kty, crv, x, y }, thumbprint };
  }

  // A proof (RFC 9449 section 4.2) for this one request: htu is the absolute URL without
  // query and fragment; ath binds it to the access token it goes with.
  async function dpopProof(key, method, path, token) {
    const url = new URL(path, window.location.href);
    url.search = "";
    url.hash = "";
    const claims = {
      jti: base64url(crypto.getRandomValues(new Uint8Array(16))),
      htm: method,
      htu: url.href,
      iat: Math.floor(Date.now() / 1000),
    };
    if (dpopNonce) claims.nonce = dpopNonce;
    if (token) claims.ath = await sha256(token);
    const header = { typ: "dpop+jwt", alg: "ES256", jwk: key.jwk };
    const segment = (object) => base64url(utf8(JSON.stringify(object)));
    const input = `${segment(header)}.${segment(claims)}`;
    // WebCrypto's ECDSA signature is already r || s, the form JWS (RFC 7518 3.4) takes.
    const algorithm = { name: "ECDSA", hash: "SHA-256" };
    const signature = await crypto.subtle.sign(algorithm, key.privateKey, utf8(input));
    return `${input}.${base64url(signature)}`;
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

  async function call(method, path, authorization, form, proof) {
    if (busy) return { status: 0, body: null };
    busy = true;
    for (const button of document.querySelectorAll("button")) button.disabled = true;
    try {
      return await send(method, path, authorization, form, proof);
    } finally {
      busy = false;
      for (const button of document.querySelectorAll("button")) button.disabled = false;
    }
  }

  // Every request says it comes from this script: a wrong login is then challenged with
  // `Form`, not `Basic`, so the browser opens no credentials prompt of its own (which would
  // leave the fetch pending, and the page frozen) and the page gets the 401 itself.
  // A `form` (an object) is sent as application/x-www-form-urlencoded, the body of the
  // OAuth 2.0 endpoints. A `proof` ({key, token}) adds a fresh DPoP proof by that key (with
  // the hash of the access token `token`, if any); a server that wants its nonce in the
  // proof (use_dpop_nonce) gets one retry with the nonce it sent (RFC 9449 section 8).
  async function send(method, path, authorization, form, proof) {
    const headers = { Accept: "application/json", "X-Requested-With": "XMLHttpRequest" };
    if (authorization) headers.Authorization = authorization;
    if (cookieMode && method !== "GET") headers["X-CSRF-Token"] = csrfToken();
    const status = byId("status");
    const output = byId("response");
    let response;
    let body = null;
    let retried = false;
    for (;;) {
      let text;
      try {
        if (proof) headers.DPoP = await dpopProof(proof.key, method, path, proof.token);
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
      try {
        body = text ? JSON.parse(text) : null;
      } catch (error) {
        body = text;
      }
      const nonce = response.headers.get("DPoP-Nonce");
      if (nonce) dpopNonce = nonce;
      const wantsNonce = body && typeof body === "object" && body.error === "use_dpop_nonce";
      if (!proof || retried || !wantsNonce || !nonce) break;
      retried = true;
    }
    const note = retried ? " (retried with the server's DPoP-Nonce)" : "";
    status.textContent = `${method} ${path} \u2192 ${response.status} ${response.statusText}${note}`;
    status.className = response.ok ? "status ok" : "status error";
    output.textContent = body === null ? "(no body)" : JSON.stringify(redacted(body), null, 2);
    return { status: response.status, body };
  }

  // A login passes the key its proof was signed by (or null); a refresh keeps the login's.
  function tookTokens(result, loginKey) {
    if (result.status !== 200 || !result.body) return;
    accessToken = cookieMode ? null : result.body.access_token;
    refreshToken = cookieMode ? null : result.body.refresh_token;
    // The server says by token_type whether it bound the tokens to the proof's key.
    if (loginKey !== undefined) dpopKey = result.body.token_type === "DPoP" ? loginKey : null;
    showToken(result.body.access_token);
    const claims = decodeSegment(result.body.access_token.split(".")[1]);
    byId("who").textContent = `Logged in as ${claims.sub} (scope: ${claims.scope || "none"}).`;
    showBinding(result.body.token_type, claims);
  }

  // token_type, and for a DPoP login the key's thumbprint as this page computed it next to
  // the cnf.jkt the server put into the access token: the same, when the token is bound to
  // this page's key.
  function showBinding(tokenType, claims) {
    const binding = byId("binding");
    binding.hidden = !tokenType;
    byId("token-type").textContent = tokenType || "";
    const dpopRows = byId("dpop-rows");
    dpopRows.hidden = !dpopKey;
    if (!dpopKey) return;
    const jkt = claims.cnf && claims.cnf.jkt;
    byId("dpop-thumbprint").textContent = dpopKey.thumbprint;
    byId("dpop-jkt").textContent = jkt || "none";
    const match = byId("dpop-match");
    const same = jkt === dpopKey.thumbprint;
    match.textContent = same
      ? "They match: the token works only with this page's key."
      : "They differ: the token is not bound to this page's key.";
    match.className = same ? "match" : "match differ";
  }

  const bearer = (token) => (token ? `Bearer ${token}` : null);
  // The access token's Authorization: a DPoP-bound token only with the DPoP scheme (RFC 9449
  // section 7.1), and with a proof that carries its hash.
  const withAccess = (token) => (token ? `${dpopKey ? "DPoP" : "Bearer"} ${token}` : null);
  const accessProof = (token) => (dpopKey && token ? { key: dpopKey, token } : null);
  // At /refresh and /token: a bound login's refresh needs a proof by its key, without ath.
  const refreshProof = () => (dpopKey ? { key: dpopKey, token: null } : null);

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
    dpopKey = null;
    showToken(null);
    showBinding(null, {});
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
  if (!canDPoP) {
    byId("login-dpop").disabled = true;
    byId("dpop-unavailable").hidden = false;
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
    // DPoP needs header tokens: with cookie tokens the option is hidden.
    const withDPoP = !cookieMode && canDPoP && byId("login-dpop").checked;
    let key = null;
    if (withDPoP) {
      try {
        key = await newDPoPKey();
      } catch (error) {
        byId("status").textContent = `No DPoP key: ${error.message}`;
        byId("status").className = "status error";
        return;
      }
    }
    const proof = key ? { key, token: null } : null;
    const result =
      !cookieMode && byId("login-via").value === "token"
        ? await call("POST", "/token", null, { grant_type: "password", username, password }, proof)
        : await call("POST", "/login", basic(username, password), null, proof);
    tookTokens(result, key);
    // Refused or unanswered (the status line says which): ready for the next try at once.
    if (result.status !== 200) byId("password").focus();
  });
  const withToken = (method, path, form) =>
    call(method, path, withAccess(accessToken), form, accessProof(accessToken));
  byId("call-protected").addEventListener("click", () => withToken("GET", "/protected"));
  byId("call-admin").addEventListener("click", () => withToken("GET", "/protected/admin"));
  byId("call-refresh").addEventListener("click", async () => {
    tookTokens(await call("POST", "/refresh", bearer(refreshToken), null, refreshProof()));
  });
  // Log out: /logout takes a live access token (with cookie tokens, the refresh cookie
  // too). Once the access token has expired, the refresh token still ends the login, at
  // /revoke: no refresh first just to log out.
  byId("call-logout").addEventListener("click", async () => {
    if (!cookieMode && refreshToken && (!accessToken || expired(accessToken))) {
      await revoke();
      return;
    }
    const result = await withToken("POST", "/logout");
    if (result.status === 204) loggedOut();
    else if (result.status === 401 && !cookieMode && refreshToken) await revoke();
  });
  byId("call-token-refresh").addEventListener("click", async () => {
    const form = { grant_type: "refresh_token", refresh_token: refreshToken || "" };
    tookTokens(await call("POST", "/token", null, form, refreshProof()));
  });
  byId("call-revoke").addEventListener("click", revoke);
  // A resource server's question about a token; here, the page's own access token asks
  // about itself, so it needs scope introspect (else the 403 shows what is missing).
  byId("call-introspect").addEventListener("click", () =>
    withToken("POST", "/introspect", { token: accessToken || "" }),
  );
  byId("call-verify").addEventListener("click", () => withToken("GET", "/verify"));
  byId("call-metadata").addEventListener("click", () =>
    call("GET", "/.well-known/oauth-authorization-server"),
  );
})();
