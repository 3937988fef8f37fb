#!/usr/bin/env node
// A DPoP (RFC 9449) client of jwtapi in Node.js, with panva's `dpop` for the key pair and
// the proofs and `jose` for the key's thumbprint:
//
//   DPOP_URL=http://127.0.0.1:5000 DPOP_USERNAME=alice DPOP_PASSWORD=... \
//     node clients/node/dpop-client.mjs
//
// The credentials come from the environment only, never from the command line, where `ps`
// and shell history would show them. It logs in (POST /login, HTTP Basic and a proof),
// calls GET /protected (Authorization: DPoP and a proof with ath), sends that very request
// again (a replayed proof, which the server must refuse), sends the token as Bearer (which
// a bound token must not pass), refreshes (POST /refresh, Authorization: Bearer <refresh
// token> and a proof) and calls GET /protected with the new token. A server that wants its
// nonce in the proofs (use_dpop_nonce) gets one retry with it.
//
// Prints one JSON line, a summary without any token, and exits 0 when every step came out
// as a DPoP client expects (tokens bound to its key, the 200s, both refusals), else 1:
//   {"ok":true,"login":{"status":200,"token_type":"DPoP","cnf_jkt_matches":true,...},...}
// It stops at the first step that did not. Exit 2 (a message on stderr, nothing on stdout):
// no answer at all, arguments given, or a variable missing.
import { parseArgs } from "node:util";
import { generateKeyPair, generateProof } from "dpop";
import { calculateJwkThumbprint, decodeJwt, exportJWK } from "jose";

const VARIABLES = ["DPOP_URL", "DPOP_USERNAME", "DPOP_PASSWORD"];

function fail(message) {
  console.error(`dpop-client.mjs: ${message}`);
  process.exit(2);
}

// No options and no positional arguments: a password typed on the command line is refused,
// and the message does not repeat it.
try {
  parseArgs({ options: {}, allowPositionals: false, strict: true });
} catch {
  fail(`usage: ${VARIABLES.map((name) => `${name}=...`).join(" ")} node dpop-client.mjs`);
}
const missing = VARIABLES.filter((name) => !process.env[name]);
if (missing.length) fail(`set ${missing.join(", ")} in the environment`);
let base;
try {
  // With a trailing slash, so that a server under a path prefix keeps it.
  base = new URL(process.env.DPOP_URL.replace(/\/?$/, "/"));
} catch {
  fail("DPOP_URL is not a URL");
}
const credentials = Buffer.from(
  `${process.env.DPOP_USERNAME}:${process.env.DPOP_PASSWORD}`,
  "utf8",
).toString("base64");

// The private key is a non-extractable CryptoKey (dpop's default): it signs, and nothing
// can read it out. The thumbprint (RFC 7638) is what the server puts into cnf.jkt.
const keypair = await generateKeyPair("ES256");
const thumbprint = await calculateJwkThumbprint(await exportJWK(keypair.publicKey), "sha256");
// The server's latest DPoP-Nonce, for the next proof (RFC 9449 section 8.2).
let nonce;

// One request with a fresh proof (ath of `accessToken`, when given); once more with the
// server's nonce when it answers use_dpop_nonce.
async function send(method, path, authorization, accessToken) {
  const url = new URL(path.replace(/^\//, ""), base);
  const htu = `${url.origin}${url.pathname}`;
  let retried = false;
  for (;;) {
    const headers = {
      Accept: "application/json",
      Authorization: authorization,
      DPoP: await generateProof(keypair, htu, method, nonce, accessToken),
    };
    const response = await request(url, { method, headers });
    if (response.nonce) nonce = response.nonce;
    if (response.body?.error !== "use_dpop_nonce" || !response.nonce || retried) {
      return { ...response, retried, url, headers };
    }
    retried = true;
  }
}

async function request(url, options) {
  let response;
  let text;
  try {
    response = await fetch(url, { ...options, signal: AbortSignal.timeout(30000) });
    text = await response.text();
  } catch (err) {
    const cause = err.cause ? ` (${err.cause.message})` : "";
    fail(`no answer from ${url.origin}: ${err.message}${cause}`);
  }
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  return {
    status: response.status,
    body,
    nonce: response.headers.get("dpop-nonce"),
    challenge: response.headers.get("www-authenticate"),
  };
}

// What the summary says about an answer: never a token, only what a test may compare.
function outcome(response) {
  const result = { status: response.status };
  if (response.body && typeof response.body.error === "string") result.error = response.body.error;
  return result;
}

function tokens(response) {
  const result = { ...outcome(response), nonce_retried: response.retried };
  if (response.status !== 200) return [result, null];
  const { access_token: access, refresh_token: refresh, token_type: type } = response.body ?? {};
  let jkt;
  try {
    jkt = decodeJwt(access).cnf?.jkt; // read, not verified: the server that issued it checks it
  } catch {
    jkt = undefined;
  }
  result.token_type = type;
  result.cnf_jkt_matches = jkt === thumbprint;
  const bound = type === "DPoP" && result.cnf_jkt_matches;
  return [result, bound ? { access, refresh } : null];
}

function resource(response) {
  const result = { ...outcome(response), nonce_retried: response.retried };
  if (response.status === 200) result.sub = response.body?.sub;
  return result;
}

const summary = { ok: false };
function finish() {
  console.log(JSON.stringify(summary));
  process.exit(summary.ok ? 0 : 1);
}

const login = await send("POST", "/login", `Basic ${credentials}`);
let pair;
[summary.login, pair] = tokens(login);
if (!pair) finish();

const call = await send("GET", "/protected", `DPoP ${pair.access}`, pair.access);
summary.protected = resource(call);
if (call.status !== 200) finish();

// The very request just answered, its proof included: a replay, refused by its jti.
const replay = await request(call.url, { method: "GET", headers: call.headers });
summary.replay = outcome(replay);
if (replay.status !== 401 || replay.body?.error !== "invalid_dpop_proof") finish();

// Without the DPoP scheme a bound token is refused, with the DPoP challenge.
const asBearer = await request(call.url, {
  method: "GET",
  headers: { Accept: "application/json", Authorization: `Bearer ${pair.access}` },
});
const scheme = asBearer.challenge?.split(" ", 1)[0] ?? null;
summary.as_bearer = { ...outcome(asBearer), challenge: scheme };
if (asBearer.status !== 401 || summary.as_bearer.challenge !== "DPoP") finish();

// A refresh keeps Bearer for the refresh token, and proves the key (no ath).
const refreshed = await send("POST", "/refresh", `Bearer ${pair.refresh}`);
[summary.refresh, pair] = tokens(refreshed);
if (!pair) finish();

const again = await send("GET", "/protected", `DPoP ${pair.access}`, pair.access);
summary.protected_after_refresh = resource(again);
summary.ok = again.status === 200;
finish();
