// Reference relay: bare Deno 2.9 (Deno.serve + Deno.upgradeWebSocket). The plain design: a Set of
// sockets, `send` if open, cache the latest. What the gateway's own code is measured against.
// Its npm packages come from bench/refs/package.json (installed by the bench with `npm ci`).
import { connect } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";

const port = Number(Deno.env.get("PORT"));
// The bench stops it with SIGTERM; exiting normally lets --cpu-prof write its profile.
Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
const nc = await connect({ servers: Deno.env.get("NATS_URL") });
let latest: string | null = null;
const sockets = new Set<WebSocket>();
Deno.serve({ port, hostname: "127.0.0.1", onListen() {} }, (req) => {
  if (new URL(req.url).pathname !== "/ws/stream") {
    return Response.json({ service: "deno-relay", status: "healthy", connections: sockets.size });
  }
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onopen = () => {
    sockets.add(socket);
    if (latest !== null) socket.send(latest);
  };
  socket.onclose = () => sockets.delete(socket);
  socket.onerror = () => {};
  return response;
});
const consumer = await jetstream(nc).consumers.get("LEVEL_SIGNALS", {
  filter_subjects: "levels.signals",
  deliver_policy: DeliverPolicy.LastPerSubject,
});
const messages = await consumer.consume({ max_messages: 256 });
console.log(JSON.stringify({ msg: "listening", port }));
for await (const m of messages) {
  latest = m.string();
  for (const socket of sockets) if (socket.readyState === WebSocket.OPEN) socket.send(latest);
}
