// Reference relay: Bun.serve WebSocket pub/sub (uWebSockets): server.publish to a topic.
import { connect } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";

const port = Number(process.env.PORT);
const nc = await connect({ servers: process.env.NATS_URL });
let latest: string | null = null;
const server = Bun.serve({
  port,
  hostname: "127.0.0.1",
  fetch(req, srv) {
    if (new URL(req.url).pathname === "/ws/stream" && srv.upgrade(req)) return;
    return Response.json({ service: "bun-relay", status: "healthy", connections: srv.subscriberCount("levels") });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      ws.subscribe("levels");
      if (latest !== null) ws.send(latest);
    },
    message() {},
  },
});
const consumer = await jetstream(nc).consumers.get("LEVEL_SIGNALS", {
  filter_subjects: "levels.signals",
  deliver_policy: DeliverPolicy.LastPerSubject,
});
const messages = await consumer.consume({ max_messages: 256 });
console.log(JSON.stringify({ msg: "listening", port: server.port }));
for await (const m of messages) {
  latest = m.string();
  server.publish("levels", latest);
}
