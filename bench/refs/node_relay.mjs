// Reference relay: Node 20 + ws. The plain design: a set of sockets, send if open, cache latest.
import http from "node:http";
import { WebSocketServer } from "ws";
import { connect } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";

const port = Number(process.env.PORT);
const nc = await connect({ servers: process.env.NATS_URL });
let latest = null;
const server = http.createServer((_req, res) => {
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ service: "node-ws-relay", status: "healthy", connections: wss.clients.size }));
});
const wss = new WebSocketServer({ server, path: "/ws/stream", perMessageDeflate: false });
wss.on("connection", (ws) => {
  if (latest !== null) ws.send(latest);
  ws.on("error", () => {});
});
const consumer = await jetstream(nc).consumers.get("LEVEL_SIGNALS", {
  filter_subjects: "levels.signals",
  deliver_policy: DeliverPolicy.LastPerSubject,
});
const messages = await consumer.consume({ max_messages: 256 });
server.listen(port, "127.0.0.1", () => console.log(JSON.stringify({ msg: "listening", port })));
for await (const m of messages) {
  latest = m.string();
  for (const ws of wss.clients) if (ws.readyState === 1) ws.send(latest);
}
