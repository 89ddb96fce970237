/**
 * Mutual challenge–response authentication with the cluster's shared secret (pure).
 *
 *   client → HELLO     { nodeId, volume uuid, clientNonce }
 *   server → CHALLENGE { nodeId, serverNonce, serverProof = HMAC(secret, "server" | transcript) }
 *   client → AUTH      { clientProof = HMAC(secret, "client" | transcript) }
 *
 * Both nonces are fresh random 32 bytes per connection, so a recorded proof or frame is useless on
 * another connection. The session keys (one per direction) are derived from the secret and both
 * nonces; every later frame carries a MAC under them.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const NONCE_LENGTH = 32;
/** MAC key of the two handshake frames that precede authentication (integrity only, not secret). */
export const HANDSHAKE_KEY = Buffer.from('cvserver-replication-handshake-v1');

export interface Transcript {
  clientNode: string;
  serverNode: string;
  volumeUuid: string;
  clientNonce: Buffer;
  serverNonce: Buffer;
  /**
   * The negotiated protocol (the client's announced versions and the one chosen, version.ts), bound
   * into the proofs so that nobody in between can talk the pair down to an older version. Absent with
   * a daemon from before the negotiation (its proofs did not cover it).
   */
  versions?: string;
}

function mac(secret: Buffer, label: string, t: Transcript): Buffer {
  const h = createHmac('sha256', secret);
  const parts = [label, t.clientNode, t.serverNode, t.volumeUuid];
  if (t.versions !== undefined) parts.push(`versions ${t.versions}`);
  for (const part of parts) {
    const b = Buffer.from(part, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    h.update(len).update(b);
  }
  return h.update(t.clientNonce).update(t.serverNonce).digest();
}

export function serverProof(secret: Buffer, t: Transcript): Buffer {
  return mac(secret, 'server-proof', t);
}

export function clientProof(secret: Buffer, t: Transcript): Buffer {
  return mac(secret, 'client-proof', t);
}

/** Constant-time comparison; false for wrong lengths too. */
export function proofMatches(expected: Buffer, got: Buffer): boolean {
  return expected.length === got.length && timingSafeEqual(expected, got);
}

export interface SessionKeys {
  clientToServer: Buffer;
  serverToClient: Buffer;
}

export function sessionKeys(secret: Buffer, t: Transcript): SessionKeys {
  return { clientToServer: mac(secret, 'key-c2s', t), serverToClient: mac(secret, 'key-s2c', t) };
}
