// Registers an account, logs in with its password, asks who it is and logs
// out, all through matrix-js-sdk's own client API (no raw HTTP), so a pass
// proves the SDK that Element uses works against the server at BASE_URL.
//
// Usage: node register_login.mjs BASE_URL USERNAME PASSWORD
//
// On success prints exactly one JSON line on stdout and exits 0. On any
// failure prints the error on stderr and exits 1. The SDK's own logging goes
// to stderr so stdout stays machine-readable.

const [major] = process.versions.node.split(".").map(Number);
if (major < 22) {
  // matrix-js-sdk 43 targets Node >= 22 (it uses Promise.withResolvers and
  // other recent built-ins); an older Node fails somewhere deep inside it.
  process.stderr.write(
    `node ${process.versions.node} is too old for matrix-js-sdk: run it with ` +
      `node_modules/.bin/node (Node 22, installed by complement-tests/interop/install.sh)\n`,
  );
  process.exit(2);
}

// The SDK logs through console.log/info/debug, looked up at call time.
for (const method of ["log", "info", "debug", "trace"]) {
  console[method] = (...args) => console.error(...args);
}

const sdk = await import("matrix-js-sdk");
const { createRequire } = await import("node:module");
// Reported so the test can tell a stale node_modules from the pinned one.
const sdkVersion = createRequire(import.meta.url)("matrix-js-sdk/package.json").version;

/** Fails the run with a message that names the step. */
function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}

async function main(baseUrl, username, password) {
  const anonymous = sdk.createClient({ baseUrl });

  // Registration through the SDK's user-interactive-auth driver, as
  // Element does it: the first request goes without `auth`, the server's
  // 401 carries the flows and a session, the driver picks the dummy flow and
  // resubmits with `{type: "m.login.dummy", session}`.
  const registerAttempts = [];
  const interactiveAuth = new sdk.InteractiveAuth({
    matrixClient: anonymous,
    doRequest: (auth) => {
      registerAttempts.push(auth === null ? null : { ...auth });
      return anonymous.registerRequest({
        username,
        password,
        initial_device_display_name: "axon interop (matrix-js-sdk register)",
        auth: auth ?? undefined,
      });
    },
    stateUpdated: (stage, status) => {
      // Only called for stages needing user input; dummy needs none.
      throw new Error(`unexpected registration stage ${stage}: ${JSON.stringify(status)}`);
    },
    requestEmailToken: () => Promise.reject(new Error("no email stage expected")),
    supportedStages: [sdk.AuthType.Dummy],
  });
  const registered = await interactiveAuth.attemptAuth();
  check(registerAttempts.length === 2, `expected 2 register requests, made ${registerAttempts.length}`);
  check(registerAttempts[0] === null, "the first register request carried auth");
  const dummy = registerAttempts[1];
  check(dummy?.type === sdk.AuthType.Dummy, `second register auth was ${JSON.stringify(dummy)}`);
  check(
    typeof dummy.session === "string" && dummy.session.length > 0,
    "the 401 gave no UIA session for the dummy stage to echo",
  );
  check(typeof registered.user_id === "string", `register gave no user_id: ${JSON.stringify(registered)}`);

  let wrongPassword;
  try {
    await anonymous.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: username },
      password: `not-${password}`,
    });
    wrongPassword = "accepted";
  } catch (error) {
    if (!(error instanceof sdk.MatrixError)) {
      throw error;
    }
    wrongPassword = `${error.httpStatus} ${error.errcode}`;
  }

  const loggedIn = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: username },
    password,
    initial_device_display_name: "axon interop (matrix-js-sdk login)",
  });
  check(typeof loggedIn.access_token === "string", "login gave no access_token");
  check(typeof loggedIn.device_id === "string", "login gave no device_id");

  // A fresh client from the login response, as the SDK's docs recommend.
  const client = sdk.createClient({
    baseUrl,
    accessToken: loggedIn.access_token,
    userId: loggedIn.user_id,
    deviceId: loggedIn.device_id,
  });
  const whoami = await client.whoami();

  await client.logout();
  // The logged-out token must be refused with M_UNKNOWN_TOKEN.
  let afterLogout;
  try {
    await client.whoami();
    afterLogout = "accepted";
  } catch (error) {
    if (!(error instanceof sdk.MatrixError)) {
      throw error;
    }
    afterLogout = `${error.httpStatus} ${error.errcode}`;
  }

  return {
    client: "matrix-js-sdk",
    client_version: sdkVersion,
    register_user_id: registered.user_id,
    register_device_id: registered.device_id ?? null,
    uia_session: dummy.session,
    user_id: loggedIn.user_id,
    device_id: loggedIn.device_id,
    client_user_id: client.getUserId(),
    whoami_user_id: whoami.user_id,
    whoami_device_id: whoami.device_id ?? null,
    wrong_password: wrongPassword,
    after_logout: afterLogout,
  };
}

const [baseUrl, username, password] = process.argv.slice(2);
if (!baseUrl || !username || !password) {
  process.stderr.write("usage: node register_login.mjs BASE_URL USERNAME PASSWORD\n");
  process.exit(2);
}

try {
  const result = await main(baseUrl, username, password);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
} catch (error) {
  const detail = error instanceof sdk.MatrixError ? ` (HTTP ${error.httpStatus}, ${JSON.stringify(error.data)})` : "";
  process.stderr.write(`matrix-js-sdk interop failed: ${error?.stack ?? error}${detail}\n`);
  process.exit(1);
}
