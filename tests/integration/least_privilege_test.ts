/**
 * GATEWAY_CREATE_STREAMS=false against a real nats-server whose gateway user has exactly the
 * permission block documented in docs/nats.md ("Least privilege"); an admin user sets the stream up.
 */
import assert from "node:assert/strict";
import { connect } from "../../lib/nats/transport.ts";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  type JetStreamManager,
  jetstreamManager,
} from "@nats-io/jetstream";
import { startGateway } from "../../lib/gateway.ts";
import { NatsServer } from "../../tools/nats_server.ts";
import {
  Client,
  eventually,
  health,
  recordingLogger,
  signal,
  testConfig,
} from "../helpers/fixtures.ts";

const ADMIN_PASSWORD = "admin-secret-pw-1";
const GATEWAY_PASSWORD = "gateway-secret-pw-1";
const DURABLE = "gateway_levels";

/** docs/nats.md's permission block, without the lines that belong to the other consumer kind. */
async function documentedPermissions(kind: "ordered" | "durable"): Promise<string> {
  const readme = await Deno.readTextFile(new URL("../../docs/nats.md", import.meta.url));
  const block = /<!-- least-privilege-permissions:start -->\s*```\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, "docs/nats.md has the least-privilege permission block");
  const other = kind === "ordered" ? "GATEWAY_DURABLE only" : "ordered consumer only";
  return block[1].split("\n").filter((line) => !line.includes(other)).join("\n");
}

/** An account with an admin user and a gateway user limited to `permissions`. */
function serverConfig(permissions: string): string {
  return `
accounts {
  APP {
    jetstream: enabled
    users = [
      { user: admin, password: "${ADMIN_PASSWORD}" }
      {
        user: gateway
        password: "${GATEWAY_PASSWORD}"
        ${permissions}
      }
    ]
  }
}
`;
}

class Admin implements AsyncDisposable {
  private constructor(readonly nc: NatsConnection, readonly jsm: JetStreamManager) {}

  static async connect(url: string): Promise<Admin> {
    const nc = await connect({ servers: url, user: "admin", pass: ADMIN_PASSWORD });
    return new Admin(nc, await jetstreamManager(nc));
  }

  async createStream(): Promise<void> {
    await this.jsm.streams.add({ name: "LEVEL_SIGNALS", subjects: ["levels.*"] });
  }

  async createDurable(): Promise<void> {
    await this.jsm.consumers.add("LEVEL_SIGNALS", {
      durable_name: DURABLE,
      ack_policy: AckPolicy.Explicit,
      filter_subject: "levels.signals",
      deliver_policy: DeliverPolicy.LastPerSubject,
    });
  }

  async publish(payload: string): Promise<number> {
    return (await jetstream(this.nc).publish("levels.signals", payload)).seq;
  }

  async streamNames(): Promise<string[]> {
    return (await this.jsm.streams.names().next()).sort();
  }

  async consumerNames(): Promise<string[]> {
    return (await this.jsm.consumers.list("LEVEL_SIGNALS").next()).map((c) => c.name).sort();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.nc.close();
  }
}

function gatewayConfig(url: string, env: Record<string, string> = {}) {
  return testConfig(url, {
    NATS_USER: "gateway",
    NATS_PASSWORD: GATEWAY_PASSWORD,
    GATEWAY_CREATE_STREAMS: "false",
    ...env,
  });
}

function violations(nats: NatsServer): string[] {
  return nats.log.split("\n").filter((line) => /Violation/.test(line));
}

Deno.test("least privilege: ordered consumer seeds, relays, survives a consumer restart, creates nothing", async () => {
  await using nats = await NatsServer.start({
    config: serverConfig(await documentedPermissions("ordered")),
  });
  await using admin = await Admin.connect(nats.url);
  await admin.createStream();
  await admin.publish(signal(1));
  await admin.publish(signal(2));

  const logger = recordingLogger();
  await using gateway = await startGateway(gatewayConfig(nats.url), { logger });
  await using client = await Client.open(gateway.addr);
  assert.deepEqual(await client.waitFor(1), [signal(2)], "cache seeded from the stream");
  await admin.publish(signal(3));
  assert.deepEqual(await client.waitFor(2), [signal(2), signal(3)]);

  // An admin removes the gateway's consumer: it must come back under the same rights.
  const [first] = await admin.consumerNames();
  assert.ok(first, "the gateway's ordered consumer exists");
  await admin.jsm.consumers.delete("LEVEL_SIGNALS", first);
  await eventually(async () => {
    const names = await admin.consumerNames();
    return names.length > 0 && !names.includes(first);
  }, "a replacement consumer");
  await admin.publish(signal(4));
  assert.deepEqual(await client.waitFor(3), [signal(2), signal(3), signal(4)]);

  assert.deepEqual(await admin.streamNames(), ["LEVEL_SIGNALS"], "MARKET_DATA was not created");
  assert.deepEqual(violations(nats), [], "no request outside the documented permissions");
});

Deno.test("least privilege: a pre-created durable is bound without consumer-create rights", async () => {
  await using nats = await NatsServer.start({
    config: serverConfig(await documentedPermissions("durable")),
  });
  await using admin = await Admin.connect(nats.url);
  await admin.createStream();
  await admin.createDurable();
  await admin.publish(signal(1));

  const logger = recordingLogger();
  await using gateway = await startGateway(
    gatewayConfig(nats.url, { GATEWAY_DURABLE: DURABLE }),
    { logger },
  );
  await using client = await Client.open(gateway.addr);
  assert.deepEqual(await client.waitFor(1), [signal(1)]);
  const last = await admin.publish(signal(2));
  assert.deepEqual(await client.waitFor(2), [signal(1), signal(2)]);
  await eventually(async () => {
    const info = await admin.jsm.consumers.info("LEVEL_SIGNALS", DURABLE);
    return info.ack_floor.stream_seq === last && info.num_ack_pending === 0;
  }, "the durable's acks to reach the last message");
  assert.deepEqual(await admin.consumerNames(), [DURABLE], "no other consumer was created");
  assert.deepEqual(violations(nats), [], "no request outside the documented permissions");

  // Deleted while running: the gateway cannot recreate it and says so, then binds it again.
  await admin.jsm.consumers.delete("LEVEL_SIGNALS", DURABLE);
  await eventually(
    () =>
      logger.lines.some((l) =>
        JSON.stringify(l).includes(
          `durable consumer ${DURABLE} (GATEWAY_DURABLE) does not exist on stream LEVEL_SIGNALS and GATEWAY_CREATE_STREAMS=false forbids creating it`,
        )
      ),
    "the clear error about the missing durable",
  );
  await admin.createDurable();
  await eventually(async () => {
    const info = await admin.jsm.consumers.info("LEVEL_SIGNALS", DURABLE);
    return info.num_waiting > 0;
  }, "the gateway to pull from the recreated durable");
  await admin.publish(signal(3));
  assert.deepEqual(await client.waitFor(3), [signal(1), signal(2), signal(3)]);
  assert.deepEqual(await admin.consumerNames(), [DURABLE]);
});

Deno.test("GATEWAY_CREATE_STREAMS=false: a durable deleted while running is not recreated, even by a user allowed to", async () => {
  await using nats = await NatsServer.start();
  const nc = await connect({ servers: nats.url });
  try {
    await deletedDurableNotRecreated(nats, nc);
  } finally {
    await nc.close();
  }
});

async function deletedDurableNotRecreated(nats: NatsServer, nc: NatsConnection): Promise<void> {
  const admin = await jetstreamManager(nc);
  await admin.streams.add({ name: "LEVEL_SIGNALS", subjects: ["levels.*"] });
  const durable = {
    durable_name: DURABLE,
    ack_policy: AckPolicy.Explicit,
    filter_subject: "levels.signals",
    deliver_policy: DeliverPolicy.LastPerSubject,
  };
  await admin.consumers.add("LEVEL_SIGNALS", durable);
  const js = jetstream(nc);
  await js.publish("levels.signals", signal(1));

  // The gateway's user may do anything: only the setting keeps it from creating.
  const logger = recordingLogger();
  await using gateway = await startGateway(
    testConfig(nats.url, { GATEWAY_CREATE_STREAMS: "false", GATEWAY_DURABLE: DURABLE }),
    { logger, lagPollMs: 200 },
  );
  await using client = await Client.open(gateway.addr);
  assert.deepEqual(await client.waitFor(1), [signal(1)]);

  await admin.consumers.delete("LEVEL_SIGNALS", DURABLE);
  const refusals = () =>
    logger.lines.filter((l) =>
      l.msg === "nats consumer failed; retrying" &&
      String(l.error).includes(
        `durable consumer ${DURABLE} (GATEWAY_DURABLE) does not exist on stream LEVEL_SIGNALS and GATEWAY_CREATE_STREAMS=false forbids creating it`,
      )
    );
  await eventually(() => refusals().length >= 3, "three refused tries");
  assert.equal(refusals()[0].level, "warn", "the first refusal is a warning");
  assert.ok(refusals().slice(1).every((l) => l.level === "debug"), "repeats are not warned");
  assert.deepEqual(
    (await admin.consumers.list("LEVEL_SIGNALS").next()).map((c) => c.name),
    [],
    "the durable was not recreated",
  );
  assert.equal((await health(gateway.addr)).status, 503, "unhealthy without its consumer");

  // Recreated by an admin: bound again, relaying, healthy.
  await admin.consumers.add("LEVEL_SIGNALS", durable);
  await js.publish("levels.signals", signal(2));
  assert.deepEqual(await client.waitFor(2), [signal(1), signal(2)]);
  await eventually(async () => (await health(gateway.addr)).status === 200, "healthy again");
}

Deno.test("GATEWAY_CREATE_STREAMS=false: a missing stream fails startup and nothing is created", async () => {
  await using nats = await NatsServer.start();
  const logger = recordingLogger();
  await assert.rejects(
    startGateway(testConfig(nats.url, { GATEWAY_CREATE_STREAMS: "false" }), { logger }),
    (err: Error) => {
      assert.match(err.message, /^Stream LEVEL_SIGNALS \(route \/ws\/stream\) does not exist/);
      assert.match(err.message, /GATEWAY_CREATE_STREAMS=false forbids creating it/);
      assert.match(err.message, /capturing levels\.signals/);
      assert.match(err.message, /GATEWAY_CREATE_STREAMS=true/);
      return true;
    },
  );
  const nc = await connect({ servers: nats.url });
  try {
    const jsm = await jetstreamManager(nc);
    assert.deepEqual(await jsm.streams.names().next(), [], "no stream was created");
  } finally {
    await nc.close();
  }
});

Deno.test("GATEWAY_CREATE_STREAMS=false: a stream that does not capture the subject, or a missing durable, fails startup", async () => {
  await using nats = await NatsServer.start();
  const nc = await connect({ servers: nats.url });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "LEVEL_SIGNALS", subjects: ["levels.*"] });
    await assert.rejects(
      startGateway(
        testConfig(nats.url, {
          GATEWAY_CREATE_STREAMS: "false",
          GATEWAY_ROUTES: "/ws/stream=other.signals@LEVEL_SIGNALS",
        }),
        { logger: recordingLogger() },
      ),
      /Stream LEVEL_SIGNALS \(route \/ws\/stream\) does not capture other\.signals \(its subjects: levels\.\*\): name the stream that holds it in GATEWAY_ROUTES/,
    );
    await assert.rejects(
      startGateway(
        testConfig(nats.url, { GATEWAY_CREATE_STREAMS: "false", GATEWAY_DURABLE: DURABLE }),
        { logger: recordingLogger() },
      ),
      /Durable consumer gateway_levels \(GATEWAY_DURABLE\) does not exist on stream LEVEL_SIGNALS and GATEWAY_CREATE_STREAMS=false forbids creating it/,
    );
    assert.deepEqual(await jsm.streams.names().next(), ["LEVEL_SIGNALS"]);
    assert.deepEqual(await jsm.consumers.list("LEVEL_SIGNALS").next(), [], "no consumer created");
  } finally {
    await nc.close();
  }
});
