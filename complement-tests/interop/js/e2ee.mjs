// Two users, on one server or on two federating servers, each with matrix-js-sdk and its Rust crypto
// (@matrix-org/matrix-sdk-crypto-wasm, the stack Element uses), do what an
// encrypted conversation needs, through the SDK's own APIs only:
//
//   1. both log in (new devices), start their crypto and sync;
//   2. alice creates a megolm-encrypted private room and invites bob, who
//      joins (through alice's server when bob's server is another one);
//   3. alice sends an encrypted message, bob decrypts it; bob answers, alice
//      decrypts the answer (Olm sessions from claimed one-time keys, room
//      keys over to-device, device lists and key counts through /sync);
//   4. both bootstrap cross-signing (the upload behind user-interactive auth
//      answered with the account password when the server asks for it);
//   5. alice asks bob's device for a verification over to-device messages,
//      bob accepts, alice starts SAS, both compare the emoji and confirm;
//      afterwards each sees the other as cross-signing verified.
//
// Usage: node e2ee.mjs BASE_URL ALICE_LOCALPART ALICE_PASSWORD BOB_LOCALPART BOB_PASSWORD [BOB_BASE_URL]
//
// BASE_URL is alice's server; bob's is BOB_BASE_URL when given, else the
// same one. With two servers everything between the users (the invite and
// join, room events, key queries and claims, to-device messages, device list
// and cross-signing key changes) crosses over federation.
//
// Every wait is on an SDK event or on a condition re-checked when the SDK
// reports progress, bounded by a deadline that names what was awaited; no
// step sleeps. On success prints exactly one JSON line on stdout and exits 0;
// on failure prints the error (and the step) on stderr and exits 1. The
// SDK's logs go to stderr, prefixed with the user they belong to.

const [major] = process.versions.node.split(".").map(Number);
if (major < 22) {
  process.stderr.write(
    `node ${process.versions.node} is too old for matrix-js-sdk: run it with ` +
      `node_modules/.bin/node (Node 22, installed by complement-tests/interop/install.sh)\n`,
  );
  process.exit(2);
}

// The SDK and the crypto's wasm log through console.*: keep stdout for the
// result line.
for (const method of ["log", "info", "debug", "trace"]) {
  console[method] = (...args) => console.error(...args);
}

const sdk = await import("matrix-js-sdk");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");
const { logger: rootLogger } = await import("matrix-js-sdk/lib/logger.js");
const { createRequire } = await import("node:module");
const require = createRequire(import.meta.url);
// Reported so the test can tell a stale node_modules from the pinned one.
const sdkVersion = require("matrix-js-sdk/package.json").version;
// The crypto package's `exports` hide its package.json: read it beside the
// entry point Node resolves.
const { readFileSync } = await import("node:fs");
const { dirname, join } = await import("node:path");
const cryptoWasmVersion = JSON.parse(
  readFileSync(join(dirname(require.resolve("@matrix-org/matrix-sdk-crypto-wasm")), "package.json"), "utf8"),
).version;

const { CryptoEvent, VerificationPhase, VerificationRequestEvent, VerifierEvent } = cryptoApi;

/** How long any single wait may take; only a hang or a lost message trips it. */
const STEP_TIMEOUT_MS = 60_000;

/** The step in progress, named in the failure message. */
let currentStep = "start";

function step(name) {
  currentStep = name;
  process.stderr.write(`=== e2ee step: ${name}\n`);
}

/** Fails the run with a message that names the step. */
function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

/**
 * Resolves with the first truthy value of `probe()`, which runs now and
 * again each time one of `sources` (pairs of emitter and event name) fires;
 * rejects after STEP_TIMEOUT_MS naming `what`. `probe` may be async; runs
 * never overlap, and a firing during a run schedules one more run.
 */
function waitFor(what, sources, probe) {
  return new Promise((resolve, reject) => {
    let done = false;
    let running = false;
    let again = false;
    const listeners = [];
    const finish = (settle, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      for (const [emitter, event, listener] of listeners) {
        emitter.off(event, listener);
      }
      settle(value);
    };
    const run = async () => {
      if (done) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          const value = await probe();
          if (value) {
            finish(resolve, value);
            return;
          }
        } while (again && !done);
      } catch (error) {
        finish(reject, error);
      } finally {
        running = false;
      }
    };
    const timer = setTimeout(
      () => finish(reject, new Error(`timed out after ${STEP_TIMEOUT_MS} ms waiting for ${what}`)),
      STEP_TIMEOUT_MS,
    );
    for (const [emitter, event] of sources) {
      const listener = () => void run();
      emitter.on(event, listener);
      listeners.push([emitter, event, listener]);
    }
    void run();
  });
}

/** Bounds a promise that has no event to wait on by the step deadline. */
function withDeadline(what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${STEP_TIMEOUT_MS} ms waiting for ${what}`)),
      STEP_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A user of the test: credentials, a logged-in client with Rust crypto. */
class Participant {
  constructor(name, baseUrl, localpart, password) {
    this.name = name;
    this.baseUrl = baseUrl;
    this.localpart = localpart;
    this.password = password;
    /** Whether the cross-signing upload was answered with a UIA challenge. */
    this.crossSigningUia = null;
  }

  /** Logs in with the password (a new device) and starts crypto and sync. */
  async start() {
    const anonymous = sdk.createClient({ baseUrl: this.baseUrl });
    const login = await anonymous.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: this.localpart },
      password: this.password,
      initial_device_display_name: `axon interop e2ee (${this.name})`,
    });
    this.userId = login.user_id;
    this.deviceId = login.device_id;
    this.client = sdk.createClient({
      baseUrl: this.baseUrl,
      accessToken: login.access_token,
      userId: login.user_id,
      deviceId: login.device_id,
      logger: rootLogger.getChild(`[${this.name}]`),
    });
    // In memory: nothing outlives the run, and Node has no IndexedDB.
    await this.client.initRustCrypto({ useIndexedDB: false });
    this.crypto = this.client.getCrypto();
    check(this.crypto, `${this.name}: initRustCrypto gave no crypto API`);
    const prepared = waitFor(`${this.name}'s first sync`, [[this.client, sdk.ClientEvent.Sync]], () =>
      ["PREPARED", "SYNCING"].includes(this.client.getSyncState()),
    );
    await this.client.startClient({ initialSyncLimit: 20 });
    await prepared;
    // The crypto uploads the device keys in the background after the first
    // sync. Someone encrypting for this user before they are on the server
    // finds no device and shares the room key with nobody here, so wait for
    // the upload as a person waits for their client to finish setting up.
    // The upload changes this user's device list, which wakes the sync.
    await waitFor(
      `${this.name}'s device keys on the server`,
      [[this.client, sdk.ClientEvent.Sync]],
      async () => {
        const keys = await this.client.downloadKeysForUsers([this.userId]);
        return keys.device_keys?.[this.userId]?.[this.deviceId] !== undefined;
      },
    );
  }

  /** Creates the cross-signing keys and uploads them (with UIA if asked). */
  async bootstrapCrossSigning() {
    await withDeadline(
      `${this.name}'s cross-signing bootstrap`,
      this.crypto.bootstrapCrossSigning({
        authUploadDeviceSigningKeys: async (makeRequest) => {
          // As Element does: try without auth (the spec lets a server accept
          // a first upload so), answer a 401 challenge with the password.
          try {
            await makeRequest(null);
            this.crossSigningUia = false;
            return;
          } catch (error) {
            if (!(error instanceof sdk.MatrixError) || error.httpStatus !== 401 || !error.data?.flows) {
              throw error;
            }
            const flows = error.data.flows.map((flow) => flow.stages.join(","));
            check(
              flows.includes("m.login.password"),
              `${this.name}: cross-signing upload offers no password flow: ${JSON.stringify(error.data)}`,
            );
            this.crossSigningUia = true;
            await makeRequest({
              type: "m.login.password",
              identifier: { type: "m.id.user", user: this.userId },
              password: this.password,
              session: error.data.session,
            });
          }
        },
      }),
    );
    const status = await this.crypto.getCrossSigningStatus();
    const cached = status.privateKeysCachedLocally;
    check(
      status.publicKeysOnDevice && cached.masterKey && cached.selfSigningKey && cached.userSigningKey,
      `${this.name}: unexpected cross-signing status ${JSON.stringify(status)}`,
    );
    check(await this.crypto.isCrossSigningReady(), `${this.name}: cross-signing not ready after bootstrap`);
    // The SDK signs its device with the new self-signing key and learns that
    // the server holds the signature only from a later /keys/query, made
    // when /sync lists the user's own keys as changed: wait for that round.
    // A cross-signed device is what makes the other user's SAS include the
    // master key in its MAC.
    await waitFor(
      `${this.name}'s own device to show as cross-signed`,
      [
        [this.client, CryptoEvent.DevicesUpdated],
        [this.client, CryptoEvent.KeysChanged],
        [this.client, CryptoEvent.UserTrustStatusChanged],
        [this.client, sdk.ClientEvent.Sync],
      ],
      async () => (await this.deviceStatus(this)).crossSigningVerified,
    );
  }

  /** Waits until the room with `roomId` exists and `userId`'s membership is `membership`. */
  waitForMembership(roomId, userId, membership) {
    return waitFor(
      `${this.name} to see ${userId} ${membership} in ${roomId}`,
      [
        [this.client, sdk.ClientEvent.Room],
        [this.client, sdk.RoomStateEvent.Members],
        [this.client, sdk.RoomMemberEvent.Membership],
      ],
      () => this.client.getRoom(roomId)?.getMember(userId)?.membership === membership,
    );
  }

  /** Waits until the crypto knows that `roomId` is encrypted. */
  waitForEncryption(roomId) {
    return waitFor(
      `${this.name} to see that ${roomId} is encrypted`,
      [
        [this.client, sdk.RoomStateEvent.Events],
        [this.client, sdk.ClientEvent.Sync],
      ],
      () => this.crypto.isEncryptionEnabledInRoom(roomId),
    );
  }

  /**
   * Waits for a message from `sender` in `roomId` whose decrypted body is
   * `body`, and returns what was learnt about it.
   */
  async waitForDecrypted(roomId, sender, body) {
    const event = await waitFor(
      `${this.name} to decrypt ${JSON.stringify(body)} from ${sender}`,
      [
        [this.client, sdk.RoomEvent.Timeline],
        [this.client, sdk.MatrixEventEvent.Decrypted],
      ],
      () => {
        const events = this.client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
        return events.find(
          (ev) =>
            ev.getSender() === sender &&
            ev.isEncrypted() &&
            !ev.isBeingDecrypted() &&
            !ev.isDecryptionFailure() &&
            ev.getType() === "m.room.message" &&
            ev.getContent().body === body,
        );
      },
    );
    return {
      event,
      report: {
        event_id: event.getId(),
        wire_type: event.getWireType(),
        algorithm: event.getWireContent().algorithm,
        body: event.getContent().body,
        sender_device: event.getWireContent().device_id ?? null,
        shield: await this.shield(event),
      },
    };
  }

  /** The shield the SDK would draw next to `event`, as `COLOUR` or `COLOUR/REASON`. */
  async shield(event) {
    const info = await this.crypto.getEncryptionInfoForEvent(event);
    if (!info) return null;
    const colour = cryptoApi.EventShieldColour[info.shieldColour];
    const reason = info.shieldReason;
    return reason === null ? colour : `${colour}/${cryptoApi.EventShieldReason[reason]}`;
  }

  /** This user's public cross-signing keys, as the SDK holds them (unpadded base64). */
  async crossSigningKeys() {
    return {
      master: await this.crypto.getCrossSigningKeyId(cryptoApi.CrossSigningKey.Master),
      self_signing: await this.crypto.getCrossSigningKeyId(cryptoApi.CrossSigningKey.SelfSigning),
      user_signing: await this.crypto.getCrossSigningKeyId(cryptoApi.CrossSigningKey.UserSigning),
    };
  }

  /** Whether this user trusts `other`'s identity through cross-signing. */
  async trusts(other) {
    return (await this.crypto.getUserVerificationStatus(other.userId)).isCrossSigningVerified();
  }

  /** What this user's crypto says about the SDK device of `owner`. */
  async deviceStatus(owner) {
    const status = await this.crypto.getDeviceVerificationStatus(owner.userId, owner.deviceId);
    check(status, `${this.name} does not know ${owner.name}'s device ${owner.deviceId}`);
    return status;
  }

  /**
   * Waits until this user has fetched `other`'s cross-signing keys (after a
   * device list change, with /keys/query).
   */
  waitForCrossSigningKeys(other) {
    return waitFor(
      `${this.name} to see ${other.name}'s cross-signing keys`,
      [
        [this.client, CryptoEvent.KeysChanged],
        [this.client, CryptoEvent.UserTrustStatusChanged],
        [this.client, sdk.ClientEvent.Sync],
      ],
      () => this.crypto.userHasCrossSigningKeys(other.userId, true),
    );
  }

  /** Waits until this user sees `other` as cross-signing verified. */
  waitForVerified(other) {
    return waitFor(
      `${this.name} to see ${other.name} as cross-signing verified`,
      [
        [this.client, CryptoEvent.UserTrustStatusChanged],
        [this.client, CryptoEvent.KeysChanged],
        [this.client, CryptoEvent.DevicesUpdated],
      ],
      () => this.trusts(other),
    );
  }

  stop() {
    this.client?.stopClient();
  }
}

/** Waits until `request` is in `phase` (failing if it is cancelled instead). */
function waitForPhase(who, request, phase) {
  return waitFor(
    `${who}'s verification request to reach phase ${VerificationPhase[phase]}`,
    [[request, VerificationRequestEvent.Change]],
    () => {
      if (request.phase === VerificationPhase.Cancelled && phase !== VerificationPhase.Cancelled) {
        throw new Error(
          `${who}'s verification was cancelled by ${request.cancellingUserId}: ${request.cancellationCode}`,
        );
      }
      return request.phase === phase ? request : null;
    },
  );
}

/** Resolves with the SAS callbacks once `verifier` shows them. */
function waitForSas(who, verifier) {
  return waitFor(`${who}'s SAS to be shown`, [[verifier, VerifierEvent.ShowSas]], () =>
    verifier.getShowSasCallbacks(),
  );
}

/** The emoji names of a SAS, in order. */
function emojiNames(sas) {
  return (sas.sas.emoji ?? []).map(([, name]) => name);
}

/**
 * Interactive SAS verification between alice's and bob's devices over
 * to-device messages, both sides driven here; returns the compared emoji.
 */
async function verifyWithSas(alice, bob) {
  // Registered before the waiter's own listener, so the request is recorded
  // by the time the waiter looks.
  let incoming = null;
  bob.client.on(CryptoEvent.VerificationRequestReceived, (request) => {
    incoming ??= request;
  });
  const received = waitFor(
    "bob to receive alice's verification request",
    [[bob.client, CryptoEvent.VerificationRequestReceived]],
    () => incoming,
  );

  const aliceRequest = await alice.crypto.requestDeviceVerification(bob.userId, bob.deviceId);
  const bobRequest = await received;
  check(bobRequest.otherUserId === alice.userId, `request came from ${bobRequest.otherUserId}`);
  check(bobRequest.otherPartySupportsMethod("m.sas.v1"), "alice's request does not offer m.sas.v1");

  await bobRequest.accept();
  await waitForPhase("alice", aliceRequest, VerificationPhase.Ready);
  await waitForPhase("bob", bobRequest, VerificationPhase.Ready);

  const aliceVerifier = await aliceRequest.startVerification("m.sas.v1");
  const bobStarted = await waitFor(
    "bob to see the SAS start",
    [[bobRequest, VerificationRequestEvent.Change]],
    () => bobRequest.verifier,
  );

  // verify() runs each side's part to the end: resolves when done, rejects
  // on cancellation.
  const aliceDone = aliceVerifier.verify();
  const bobDone = bobStarted.verify();
  const [aliceSas, bobSas] = await Promise.all([
    waitForSas("alice", aliceVerifier),
    waitForSas("bob", bobStarted),
  ]);
  const aliceEmoji = emojiNames(aliceSas);
  const bobEmoji = emojiNames(bobSas);
  check(aliceEmoji.length === 7, `alice's SAS has ${aliceEmoji.length} emoji`);
  // What the two people would compare on their screens.
  check(
    JSON.stringify(aliceEmoji) === JSON.stringify(bobEmoji),
    `the SAS differs: alice ${aliceEmoji} / bob ${bobEmoji}`,
  );
  await Promise.all([aliceSas.confirm(), bobSas.confirm()]);
  await withDeadline("both verifiers to finish", Promise.all([aliceDone, bobDone]));
  await waitForPhase("alice", aliceRequest, VerificationPhase.Done);
  await waitForPhase("bob", bobRequest, VerificationPhase.Done);
  return aliceEmoji;
}

/** The server name part of a user id. */
function serverOf(userId) {
  return userId.slice(userId.indexOf(":") + 1);
}

async function main(baseUrl, aliceLocalpart, alicePassword, bobLocalpart, bobPassword, bobBaseUrl) {
  const alice = new Participant("alice", baseUrl, aliceLocalpart, alicePassword);
  const bob = new Participant("bob", bobBaseUrl ?? baseUrl, bobLocalpart, bobPassword);
  try {
    step("login, crypto and first sync");
    await alice.start();
    await bob.start();

    step("encrypted room");
    const { room_id: roomId } = await alice.client.createRoom({
      preset: sdk.Preset.PrivateChat,
      invite: [bob.userId],
      name: "axon e2ee interop",
      initial_state: [
        {
          type: "m.room.encryption",
          state_key: "",
          content: { algorithm: "m.megolm.v1.aes-sha2" },
        },
      ],
    });
    await bob.waitForMembership(roomId, bob.userId, sdk.KnownMembership.Invite);
    // As Element does for an invite from another server: join through the
    // inviter's server, the one bob's server knows to be in the room.
    const aliceServer = serverOf(alice.userId);
    await bob.client.joinRoom(
      roomId,
      aliceServer === serverOf(bob.userId) ? {} : { viaServers: [aliceServer] },
    );
    // Each encrypts for the members it knows of, and learns that the room is
    // encrypted from the state its sync delivers: wait until both have seen
    // the join, as people would before typing.
    await alice.waitForMembership(roomId, bob.userId, sdk.KnownMembership.Join);
    await bob.waitForMembership(roomId, bob.userId, sdk.KnownMembership.Join);
    await alice.waitForEncryption(roomId);
    await bob.waitForEncryption(roomId);

    step("alice -> bob");
    const aliceBody = `hello bob, this is secret ${Date.now()}`;
    await alice.client.sendTextMessage(roomId, aliceBody);
    const { event: bobEvent, report: bobReceived } = await bob.waitForDecrypted(
      roomId,
      alice.userId,
      aliceBody,
    );

    step("bob -> alice");
    const bobBody = `hello alice, this is secret too ${Date.now()}`;
    await bob.client.sendTextMessage(roomId, bobBody);
    const { event: aliceEvent, report: aliceReceived } = await alice.waitForDecrypted(
      roomId,
      bob.userId,
      bobBody,
    );

    step("cross-signing bootstrap");
    await alice.bootstrapCrossSigning();
    await bob.bootstrapCrossSigning();
    // Before verifying, neither trusts the other's identity.
    const aliceTrustBefore = await alice.trusts(bob);
    const bobTrustBefore = await bob.trusts(alice);

    step("each sees the other's cross-signing keys");
    // The SAS MAC covers the master key only if the verifier knows it: wait
    // until each side has fetched the other's new identity (device list
    // change -> /keys/query).
    await alice.waitForCrossSigningKeys(bob);
    await bob.waitForCrossSigningKeys(alice);

    step("SAS verification");
    const emoji = await verifyWithSas(alice, bob);

    step("verified both ways");
    await alice.waitForVerified(bob);
    await bob.waitForVerified(alice);

    return {
      client: "matrix-js-sdk",
      client_version: sdkVersion,
      crypto_wasm_version: cryptoWasmVersion,
      crypto_version: alice.crypto.getVersion(),
      room_id: roomId,
      federated: alice.baseUrl !== bob.baseUrl,
      alice: {
        user_id: alice.userId,
        device_id: alice.deviceId,
        cross_signing_uia: alice.crossSigningUia,
        cross_signing_keys: await alice.crossSigningKeys(),
      },
      bob: {
        user_id: bob.userId,
        device_id: bob.deviceId,
        cross_signing_uia: bob.crossSigningUia,
        cross_signing_keys: await bob.crossSigningKeys(),
      },
      alice_body: aliceBody,
      bob_body: bobBody,
      bob_received: bobReceived,
      alice_received: aliceReceived,
      alice_trusts_bob_before: aliceTrustBefore,
      bob_trusts_alice_before: bobTrustBefore,
      sas_emoji: emoji,
      alice_trusts_bob: await alice.trusts(bob),
      bob_trusts_alice: await bob.trusts(alice),
      alice_trusts_bob_device: (await alice.deviceStatus(bob)).crossSigningVerified,
      bob_trusts_alice_device: (await bob.deviceStatus(alice)).crossSigningVerified,
      // The messages decrypted before the verification, judged again now.
      bob_shield_after: await bob.shield(bobEvent),
      alice_shield_after: await alice.shield(aliceEvent),
    };
  } finally {
    alice.stop();
    bob.stop();
  }
}

const args = process.argv.slice(2);
if (args.length < 5 || args.length > 6 || args.some((arg) => !arg)) {
  process.stderr.write(
    "usage: node e2ee.mjs BASE_URL ALICE_LOCALPART ALICE_PASSWORD BOB_LOCALPART BOB_PASSWORD [BOB_BASE_URL]\n",
  );
  process.exit(2);
}

try {
  const result = await main(...args);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
} catch (error) {
  const detail =
    error instanceof sdk.MatrixError ? ` (HTTP ${error.httpStatus}, ${JSON.stringify(error.data)})` : "";
  process.stderr.write(
    `matrix-js-sdk e2ee interop failed at step "${currentStep}": ${error?.stack ?? error}${detail}\n`,
  );
  process.exit(1);
}
