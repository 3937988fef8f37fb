#!/usr/bin/env node
// Verify a jwtapi access token in Node.js with jose, through the issuer's JWKS.
//
//   node clients/node/verify.mjs --jwks-url https://auth.example.com/.well-known/jwks.json \
//     --issuer https://auth.example.com --audience orders-api --algorithm RS256 < token.txt
//
// The token is read from stdin, never from the command line, where `ps` and shell
// history would show it. Prints one JSON line and exits 0 when the token is valid:
//   {"valid":true,"sub":"alice","scope":"read","alg":"RS256","kid":"..."}
// and 1 when it is not, with jose's error code (and, for a claim, which one):
//   {"valid":false,"error":"ERR_JWS_SIGNATURE_VERIFICATION_FAILED"}
//   {"valid":false,"error":"ERR_JWT_CLAIM_VALIDATION_FAILED","claim":"aud"}
// Anything else (bad arguments, the JWKS unreachable) is not an answer about the token:
// a message on stderr and exit 2.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { createRemoteJWKSet, errors, jwtVerify } from "jose";

const OPTIONS = ["jwks-url", "issuer", "audience", "algorithm"];
const USAGE =
  "usage: node verify.mjs --jwks-url URL --issuer ISSUER --audience AUDIENCE --algorithm ALG < token";

function fail(message) {
  console.error(`verify.mjs: ${message}`);
  process.exit(2);
}

// parseArgs refuses positional arguments, so a token put on the command line is refused
// too; its own message would repeat the token, hence only the usage line.
let values;
try {
  ({ values } = parseArgs({
    options: Object.fromEntries(OPTIONS.map((name) => [name, { type: "string" }])),
  }));
} catch {
  fail(USAGE);
}
if (OPTIONS.some((name) => !values[name])) fail(USAGE);

const token = readFileSync(0, "utf8").trim();
if (!token) fail("no token on stdin");

// Fetched on first use and cached (10 minutes by default); fetched again when a token names
// a kid it does not list, at most every 30 seconds. A real service builds this once, at
// start-up, and shares it between requests.
const jwks = createRemoteJWKSet(new URL(values["jwks-url"]));

try {
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer: values.issuer,
    audience: values.audience,
    typ: "at+jwt", // RFC 9068 access tokens only: a refresh token (refresh+jwt) fails
    algorithms: [values.algorithm], // the configured one, never the token's own choice
  });
  console.log(
    JSON.stringify({
      valid: true,
      sub: payload.sub,
      scope: payload.scope,
      alg: protectedHeader.alg,
      kid: protectedHeader.kid,
    }),
  );
} catch (err) {
  if (!(err instanceof errors.JOSEError) || err instanceof errors.JWKSTimeout) {
    fail(`cannot verify: ${err.message}${err.cause ? ` (${err.cause.message})` : ""}`);
  }
  const answer = { valid: false, error: err.code };
  if ("claim" in err) answer.claim = err.claim; // which claim: "aud", "iss", "typ", "exp"…
  console.log(JSON.stringify(answer));
  process.exit(1);
}
