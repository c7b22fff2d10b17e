/**
 * NATS decentralized auth for tests: an operator, a system account, an account with JetStream,
 * a user and its `.creds` file, made with the npm NATS jwt/nkeys libraries, plus the
 * nats-server config (operator mode, memory resolver) that trusts them. Also plain user nkeys.
 */
import {
  createAccount,
  createOperator,
  createUser,
  defaultNatsLimits,
  encodeAccount,
  encodeOperator,
  encodeUser,
  fmtCreds,
} from "@nats-io/jwt";
import { createUser as createUserNkey } from "@nats-io/nkeys";

export interface OperatorSetup {
  /** nats-server config text: `operator`, `system_account`, `resolver: MEMORY`, preloads. */
  readonly serverConfig: string;
  /** The user's `.creds` file content (user JWT + seed). */
  readonly creds: Uint8Array;
  /** The user's public key (`U…`): not a secret. */
  readonly userPublicKey: string;
  /** Every secret made here (seeds and JWTs): none may appear in the gateway's output. */
  readonly secrets: readonly string[];
}

const decoder = new TextDecoder();

/** Unlimited account limits with JetStream enabled (an account JWT without limits allows nothing). */
function accountLimits() {
  return {
    ...defaultNatsLimits(),
    imports: -1,
    exports: -1,
    wildcards: true,
    conn: -1,
    leaf: -1,
    mem_storage: -1,
    disk_storage: -1,
    streams: -1,
    consumer: -1,
  };
}

/** A fresh operator with a system account and one JetStream account holding one user. */
export async function operatorSetup(userName = "gw"): Promise<OperatorSetup> {
  const operator = createOperator();
  const system = createAccount();
  const account = createAccount();
  const user = createUser();
  const operatorJwt = await encodeOperator("test-operator", operator, {
    system_account: system.getPublicKey(),
  });
  const systemJwt = await encodeAccount("SYS", system, {}, { signer: operator });
  const accountJwt = await encodeAccount("APP", account, { limits: accountLimits() }, {
    signer: operator,
  });
  const userJwt = await encodeUser(userName, user, account);
  const serverConfig = [
    `operator: ${operatorJwt}`,
    `system_account: ${system.getPublicKey()}`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${system.getPublicKey()}: ${systemJwt}`,
    `  ${account.getPublicKey()}: ${accountJwt}`,
    "}",
    "",
  ].join("\n");
  return {
    serverConfig,
    creds: fmtCreds(userJwt, user),
    userPublicKey: user.getPublicKey(),
    secrets: [
      userJwt,
      decoder.decode(user.getSeed()),
      decoder.decode(account.getSeed()),
      decoder.decode(operator.getSeed()),
    ],
  };
}

export interface UserNkey {
  /** The seed file content (`SU…` and a newline), as `nk -gen user` writes it. A secret. */
  readonly seed: string;
  readonly publicKey: string;
}

/** A fresh user nkey, for an `authorization { users: [{ nkey: … }] }` server block. */
export function userNkey(): UserNkey {
  const kp = createUserNkey();
  return { seed: `${decoder.decode(kp.getSeed())}\n`, publicKey: kp.getPublicKey() };
}
